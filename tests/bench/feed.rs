//! Measures the feed component through the local host against MariaDB and
//! the SQLite key-value store. It prints the latency of
//! `GET /api/articles/:slug` on a cache miss and on a hit, and the cache hit
//! ratio of article reads while concurrent clients also favourite articles.
//! It also prints the statements and key-value calls of each list route,
//! from the component's log lines.
//! Prints medians and p99s from one run; compare figures only within a run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use conduit_tests::{Host, Reply, app_options};
use serde_json::{Value, json};

const ARTICLES: usize = 400;
const CACHED_SAMPLES: usize = 2_000;
const WARM_UP: usize = 100;
const CLIENTS: usize = 16;
const REQUESTS_PER_CLIENT: usize = 150;
/// One request in this many is a favourite or unfavourite, which invalidates the article.
const WRITE_EVERY: usize = 20;
const POPULAR: usize = 50;
/// Repeats of each list route after its first request.
const LIST_REPEATS: usize = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn summary(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

async fn register(host: &Host, prefix: &str) -> (String, String) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let username = format!("{prefix}{:x}", nanos % 0xff_ffff);
    let body = json!({"user": {"username": username, "email": format!("{username}@example.test"), "password": "benchmark passphrase"}});
    let reply = host.send_json("POST", "/api/users", None, &body).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    (username, reply.json()["user"]["token"].as_str().unwrap().to_string())
}

async fn timed(send: impl Future<Output = Reply>) -> (Duration, Reply) {
    let started = Instant::now();
    let reply = send.await;
    (started.elapsed(), reply)
}

fn request_id(reply: &Reply) -> String {
    reply.header("x-request-id").unwrap_or_default().to_string()
}

#[tokio::main]
async fn main() {
    let host = Host::start(app_options().arg("--quiet-component-output"));
    let (author, author_token) = register(&host, "benchauthor").await;
    let (_, reader_token) = register(&host, "benchreader").await;
    let follow = host.send("POST", &format!("/api/profiles/{author}/follow"), Some(&reader_token)).await;
    assert_eq!(follow.status, 200, "{}", follow.text());

    let tag = format!("bench{}", &author[author.len() - 6..]);
    let mut slugs = Vec::with_capacity(ARTICLES);
    for i in 0..ARTICLES {
        let article = json!({"article": {"title": format!("Benchmark article {i}"), "description": "d", "body": "b".repeat(2_000), "tagList": [tag, "benchmark"]}});
        let reply = host.send_json("POST", "/api/articles", Some(&author_token), &article).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        slugs.push(reply.json()["article"]["slug"].as_str().unwrap().to_string());
    }

    // A miss: the first read of each article (its author block is cached by then).
    let mut miss_times = Vec::with_capacity(ARTICLES);
    let mut miss_ids = Vec::new();
    for slug in &slugs {
        let (time, reply) = timed(host.get(&format!("/api/articles/{slug}"))).await;
        assert_eq!(reply.status, 200);
        miss_times.push(time);
        miss_ids.push(request_id(&reply));
    }
    let hot = format!("/api/articles/{}", slugs[0]);
    for _ in 0..WARM_UP {
        assert_eq!(host.get(&hot).await.status, 200);
    }
    let mut hit_times = Vec::with_capacity(CACHED_SAMPLES);
    let mut signed_in_times = Vec::with_capacity(CACHED_SAMPLES);
    for _ in 0..CACHED_SAMPLES {
        hit_times.push(timed(host.get(&hot)).await.0);
        let (time, reply) = timed(host.send("GET", &hot, Some(&reader_token))).await;
        assert_eq!(reply.status, 200);
        signed_in_times.push(time);
    }

    // Concurrent readers of the popular articles; some requests favourite or unfavourite one.
    let started = Instant::now();
    let clients = (0..CLIENTS).map(|client| {
        let (host, slugs, token) = (&host, &slugs, &reader_token);
        async move {
            let mut ids = Vec::new();
            for i in 0..REQUESTS_PER_CLIENT {
                let slug = &slugs[(client * 7 + i * 13) % POPULAR];
                if i % WRITE_EVERY == WRITE_EVERY - 1 {
                    let method = if (client + i) % 2 == 0 { "POST" } else { "DELETE" };
                    let reply = host.send(method, &format!("/api/articles/{slug}/favorite"), Some(token)).await;
                    assert_eq!(reply.status, 200, "{}", reply.text());
                } else {
                    let reply = host.get(&format!("/api/articles/{slug}")).await;
                    assert_eq!(reply.status, 200);
                    ids.push(request_id(&reply));
                }
            }
            ids
        }
    });
    let load_ids: Vec<String> = futures::future::join_all(clients).await.into_iter().flatten().collect();
    let load_rate = (CLIENTS * REQUESTS_PER_CLIENT) as f64 / started.elapsed().as_secs_f64();

    // Each list route: the first request, then repeats; the request ids of the first and last.
    let mut list_ids: Vec<(String, String, String, Duration)> = Vec::new();
    let list_routes: Vec<(String, String, Option<&str>)> = vec![
        ("GET /api/articles (first page, anonymous)".into(), "/api/articles".into(), None),
        ("GET /api/articles (first page, signed in)".into(), "/api/articles".into(), Some(&reader_token)),
        ("GET /api/articles?limit=100".into(), "/api/articles?limit=100".into(), None),
        ("GET /api/articles?offset=20 (not cached)".into(), "/api/articles?offset=20".into(), None),
        ("GET /api/articles?tag= limit 20".into(), format!("/api/articles?tag={tag}&limit=20"), None),
        ("GET /api/articles?tag= limit 100".into(), format!("/api/articles?tag={tag}&limit=100"), None),
        ("GET /api/articles?author=, signed in".into(), format!("/api/articles?author={author}"), Some(&reader_token)),
        ("GET /api/articles?favorited=".into(), "/api/articles?favorited=nobody".into(), None),
        ("GET /api/articles/feed limit 20".into(), "/api/articles/feed".into(), Some(&reader_token)),
        ("GET /api/articles/feed limit 100".into(), "/api/articles/feed?limit=100".into(), Some(&reader_token)),
        ("GET /api/articles/:slug/comments".into(), format!("/api/articles/{}/comments", slugs[1]), None),
        ("GET /api/tags".into(), "/api/tags".into(), None),
    ];
    for (label, path, token) in &list_routes {
        let first = host.send("GET", path, *token).await;
        assert_eq!(first.status, 200, "{label}: {}", first.text());
        let mut times = Vec::with_capacity(LIST_REPEATS);
        let mut last = String::new();
        for _ in 0..LIST_REPEATS {
            let (time, reply) = timed(host.send("GET", path, *token)).await;
            assert_eq!(reply.status, 200, "{label}: {}", reply.text());
            times.push(time);
            last = request_id(&reply);
        }
        list_ids.push((label.clone(), request_id(&first), last, summary(times).0));
    }

    let logs: HashMap<String, Value> = host
        .component_logs("feed")
        .await
        .into_iter()
        .filter(|line| line["event"] == "request")
        .map(|line| (line["request_id"].as_str().unwrap_or_default().to_string(), line))
        .collect();
    let statements = |id: &String| logs.get(id).and_then(|l| l["db_statements"].as_u64()).unwrap_or(u64::MAX);
    let kv_calls = |id: &String| logs.get(id).and_then(|l| l["kv_calls"].as_u64()).unwrap_or(u64::MAX);

    let (miss_median, miss_p99) = summary(miss_times);
    let (hit_median, hit_p99) = summary(hit_times);
    let (signed_median, signed_p99) = summary(signed_in_times);
    println!("feed over loopback, sequential requests on one keep-alive connection (2 KB bodies):");
    println!("  GET /api/articles/:slug, cache miss ({ARTICLES}, first read of each): median {}, p99 {}", ms(miss_median), ms(miss_p99));
    println!("  GET /api/articles/:slug, cache hit, anonymous ({CACHED_SAMPLES}): median {}, p99 {}", ms(hit_median), ms(hit_p99));
    println!("  GET /api/articles/:slug, cache hit, signed in ({CACHED_SAMPLES}): median {}, p99 {}", ms(signed_median), ms(signed_p99));
    println!(
        "  ratio miss / hit (anonymous): median {:.2}, p99 {:.2}",
        miss_median.as_secs_f64() / hit_median.as_secs_f64(),
        miss_p99.as_secs_f64() / hit_p99.as_secs_f64()
    );
    let miss_statements: Vec<u64> = miss_ids.iter().map(statements).collect();
    println!(
        "  statements on a miss: {:?}; key-value calls on a miss: {:?}",
        miss_statements.iter().min().zip(miss_statements.iter().max()),
        miss_ids.first().map(kv_calls)
    );

    let hits = load_ids.iter().filter(|id| statements(id) == 0).count();
    println!(
        "{CLIENTS} concurrent clients x {REQUESTS_PER_CLIENT} requests over {POPULAR} articles, 1 in {WRITE_EVERY} a favourite or unfavourite:"
    );
    println!("  {load_rate:.0} requests/s; anonymous article reads served with no statement: {hits} of {} ({:.1} %)", load_ids.len(), 100.0 * hits as f64 / load_ids.len() as f64);

    println!("list routes: statements and key-value calls (from the log lines) of the first request and of a repeat, and the repeats' median:");
    for (label, first, repeat, median) in &list_ids {
        println!(
            "  {label:<44} first {} st {:>3} kv, repeat {} st {:>3} kv, median {}",
            statements(first),
            kv_calls(first),
            statements(repeat),
            kv_calls(repeat),
            ms(*median)
        );
    }
}
