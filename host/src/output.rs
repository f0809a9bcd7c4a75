//! Component stdout and stderr, captured per component as `spin up` does: each
//! stream is appended to `<log-dir>/<component>_stdout.txt` (or `_stderr.txt`)
//! and echoed to the host's stderr prefixed with the component id.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

#[derive(Clone)]
pub struct ComponentOutput {
    stdout: Sink,
    stderr: Sink,
}

#[derive(Clone)]
struct Sink {
    prefix: Arc<str>,
    file: Option<Arc<Mutex<File>>>,
    echo: bool,
}

impl ComponentOutput {
    /// `log_dir = None` keeps output on the terminal only.
    pub fn new(component: &str, log_dir: Option<&Path>, echo: bool) -> Result<Self> {
        let open = |suffix: &str| -> Result<Option<Arc<Mutex<File>>>> {
            let Some(dir) = log_dir else { return Ok(None) };
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create log directory {}", dir.display()))?;
            let path = dir.join(format!("{component}_{suffix}.txt"));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            Ok(Some(Arc::new(Mutex::new(file))))
        };
        let prefix: Arc<str> = format!("[{component}] ").into();
        Ok(Self {
            stdout: Sink { prefix: prefix.clone(), file: open("stdout")?, echo },
            stderr: Sink { prefix, file: open("stderr")?, echo },
        })
    }

    pub fn stdout(&self) -> impl StdoutStream + 'static {
        self.stdout.clone()
    }

    pub fn stderr(&self) -> impl StdoutStream + 'static {
        self.stderr.clone()
    }
}

impl IsTerminal for Sink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Sink {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(SinkWriter {
            sink: self.clone(),
            pending_line: Vec::new(),
        })
    }
}

/// Writes through to the file at once; echoes whole lines to the terminal.
struct SinkWriter {
    sink: Sink,
    pending_line: Vec<u8>,
}

impl SinkWriter {
    fn write_now(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(file) = &self.sink.file {
            file.lock().unwrap_or_else(|p| p.into_inner()).write_all(buf)?;
        }
        if self.sink.echo {
            self.pending_line.extend_from_slice(buf);
            while let Some(end) = self.pending_line.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending_line.drain(..=end).collect();
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(self.sink.prefix.as_bytes());
                let _ = err.write_all(&line);
            }
        }
        Ok(())
    }
}

impl AsyncWrite for SinkWriter {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.write_now(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
