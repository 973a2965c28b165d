//! Log lines captured in memory: tests search them for leaks; the cost model counts their
//! bytes.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Every log line the process writes, kept in memory: [`Captured::install`] for tests, or
/// `tracing_subscriber::fmt().with_writer(captured.clone())` with another format.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Installs a JSON subscriber at debug level that writes here; returns the capture.
    pub fn install() -> Self {
        let logs = Self::default();
        tracing_subscriber::fmt()
            .json()
            .with_env_filter("debug")
            .with_writer(logs.clone())
            .init();
        logs
    }

    /// The process's capture, installed by the first caller (one subscriber per test binary:
    /// tests sharing a binary share it, and each searches it for its own values).
    pub fn global() -> Self {
        static GLOBAL: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(Self::install).clone()
    }

    fn bytes(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many bytes were written.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
