//! The bounded ring buffer of samples waiting to be sent.
//!
//! Every sample goes through it, connected or not; while the coordinator is unreachable it fills up,
//! and past its capacity the oldest sample is dropped and counted, so memory stays bounded and the
//! coordinator learns how much history is missing. It can be saved to and loaded from a JSON file, so
//! a re-exec or a restart loses nothing.

use std::collections::VecDeque;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::health::HealthSample;

/// Why the buffer file could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("cannot write the sample buffer to {path}: {source}; check the state directory's permissions")]
    Write { path: String, source: std::io::Error },
    #[error("cannot read the sample buffer {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the sample buffer {path} is not valid JSON ({source}); it will be ignored")]
    Parse { path: String, source: serde_json::Error },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleBuffer {
    samples: VecDeque<HealthSample>,
    capacity: usize,
    /// Samples dropped since the count was last taken with [`SampleBuffer::take_dropped`].
    dropped: u64,
}

impl SampleBuffer {
    /// A buffer of at most `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        SampleBuffer { samples: VecDeque::with_capacity(capacity.min(1024)), capacity, dropped: 0 }
    }

    /// Appends `sample`, dropping the oldest one when full.
    pub fn push(&mut self, sample: HealthSample) {
        if self.samples.len() >= self.capacity {
            self.samples.pop_front();
            self.dropped += 1;
        }
        self.samples.push_back(sample);
    }

    /// Removes and returns up to `max` samples, oldest first.
    pub fn take_batch(&mut self, max: usize) -> Vec<HealthSample> {
        let n = max.min(self.samples.len());
        self.samples.drain(..n).collect()
    }

    /// Puts back a batch that could not be sent, in front of newer samples, within capacity
    /// (the oldest of the batch go first when it does not fit).
    pub fn requeue_front(&mut self, batch: Vec<HealthSample>) {
        for sample in batch.into_iter().rev() {
            if self.samples.len() >= self.capacity {
                self.dropped += 1;
                continue;
            }
            self.samples.push_front(sample);
        }
    }

    /// The number of samples dropped since the last call, and resets it.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Merges `older` (e.g. loaded from disk at start) in front of what this buffer holds.
    pub fn prepend(&mut self, older: SampleBuffer) {
        self.dropped += older.dropped;
        self.requeue_front(older.samples.into());
    }

    /// Writes the buffer to `path` (through a temporary file, so a crash never leaves half a file).
    pub fn save(&self, path: &Path) -> Result<(), BufferError> {
        let write_error = |source| BufferError::Write { path: path.display().to_string(), source };
        let json = serde_json::to_vec(self).map_err(|e| write_error(std::io::Error::other(e)))?;
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, json).map_err(write_error)?;
        std::fs::rename(&temporary, path).map_err(write_error)
    }

    /// Reads a buffer saved by [`SampleBuffer::save`]; `Ok(None)` when there is no file.
    pub fn load(path: &Path) -> Result<Option<SampleBuffer>, BufferError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(BufferError::Read { path: path.display().to_string(), source }),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| BufferError::Parse { path: path.display().to_string(), source })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    /// A sample whose `taken_at` is `n` seconds after the epoch, so tests can tell samples apart.
    pub(crate) fn sample(n: u64) -> HealthSample {
        HealthSample {
            taken_at: SystemTime::UNIX_EPOCH + Duration::from_secs(n),
            cpu_percent: 1.0,
            load1: 0.5,
            load5: 0.25,
            load15: 0.125,
            memory_total_bytes: 1 << 30,
            memory_used_bytes: 1 << 29,
            memory_available_bytes: 1 << 29,
            swap_total_bytes: 0,
            swap_used_bytes: 0,
            filesystems: vec![],
            temperatures: vec![],
            networks: vec![],
            uptime_seconds: n,
            logical_cpus: 2,
        }
    }

    fn ids(samples: &[HealthSample]) -> Vec<u64> {
        samples.iter().map(|s| s.uptime_seconds).collect()
    }

    #[test]
    fn is_bounded_and_counts_what_it_drops() {
        let mut buffer = SampleBuffer::new(3);
        for n in 1..=5 {
            buffer.push(sample(n));
        }
        assert_eq!(buffer.len(), 3);
        assert_eq!(buffer.take_dropped(), 2);
        assert_eq!(buffer.take_dropped(), 0, "the count resets once taken");
        assert_eq!(ids(&buffer.take_batch(100)), [3, 4, 5]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn flushes_oldest_first_in_batches() {
        let mut buffer = SampleBuffer::new(360);
        for n in 1..=250 {
            buffer.push(sample(n));
        }
        let first = buffer.take_batch(100);
        let second = buffer.take_batch(100);
        let third = buffer.take_batch(100);
        assert_eq!(ids(&first), (1..=100).collect::<Vec<_>>());
        assert_eq!(ids(&second), (101..=200).collect::<Vec<_>>());
        assert_eq!(ids(&third), (201..=250).collect::<Vec<_>>());
    }

    #[test]
    fn requeued_batches_go_back_in_front_within_capacity() {
        let mut buffer = SampleBuffer::new(4);
        for n in 1..=4 {
            buffer.push(sample(n));
        }
        let batch = buffer.take_batch(3);
        buffer.push(sample(5));
        buffer.push(sample(6));
        buffer.requeue_front(batch);
        assert_eq!(ids(&buffer.take_batch(10)), [3, 4, 5, 6]);
        assert_eq!(buffer.take_dropped(), 2);
    }

    #[test]
    fn survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buffer.json");
        assert!(SampleBuffer::load(&path).unwrap().is_none());
        let mut buffer = SampleBuffer::new(2);
        for n in 1..=3 {
            buffer.push(sample(n));
        }
        buffer.save(&path).unwrap();
        let loaded = SampleBuffer::load(&path).unwrap().unwrap();
        let mut fresh = SampleBuffer::new(10);
        fresh.push(sample(9));
        fresh.prepend(loaded);
        assert_eq!(fresh.take_dropped(), 1);
        assert_eq!(ids(&fresh.take_batch(10)), [2, 3, 9]);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(SampleBuffer::load(&path), Err(BufferError::Parse { .. })));
    }
}
