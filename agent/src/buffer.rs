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
    /// Every sample not yet acknowledged by the coordinator, oldest first; the first `sent` of them
    /// went out on the current heartbeat stream.
    samples: VecDeque<HealthSample>,
    capacity: usize,
    /// Samples dropped since the count was last taken with [`SampleBuffer::take_dropped`].
    dropped: u64,
    /// The next sample's sequence number. It starts at the clock in microseconds, so a buffer file
    /// lost with its counter still never reuses a number the coordinator has stored.
    #[serde(default = "seq_start")]
    next_seq: u64,
    /// How many samples at the front were sent on the current stream (not saved: a new process
    /// sends everything again).
    #[serde(skip)]
    sent: usize,
}

/// Sequence numbers start at the clock in microseconds since 1970 (never 0).
fn seq_start() -> u64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .unwrap_or(0);
    micros.max(1)
}

impl SampleBuffer {
    /// A buffer of at most `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        SampleBuffer {
            samples: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            dropped: 0,
            next_seq: seq_start(),
            sent: 0,
        }
    }

    /// Appends `sample` with the next sequence number, dropping the oldest one when full.
    pub fn push(&mut self, mut sample: HealthSample) {
        if self.samples.len() >= self.capacity {
            self.pop_oldest();
        }
        sample.seq = self.next_seq;
        self.next_seq += 1;
        self.samples.push_back(sample);
    }

    fn pop_oldest(&mut self) {
        if self.samples.pop_front().is_some() {
            self.dropped += 1;
            self.sent = self.sent.saturating_sub(1);
        }
    }

    /// Up to `max` samples not yet sent on this stream, oldest first. They stay in the buffer until
    /// the coordinator acknowledges them ([`SampleBuffer::acknowledge`]).
    pub fn next_batch(&mut self, max: usize) -> Vec<HealthSample> {
        let end = (self.sent + max).min(self.samples.len());
        let batch: Vec<HealthSample> = self.samples.range(self.sent..end).cloned().collect();
        self.sent = end;
        batch
    }

    /// A new stream: everything still unacknowledged is sent again (the coordinator skips what it has).
    pub fn resend_all(&mut self) {
        self.sent = 0;
    }

    /// The coordinator stored every sample up to `stored_through`: they leave the buffer.
    /// Returns how many left.
    pub fn acknowledge(&mut self, stored_through: u64) -> usize {
        let mut gone = 0;
        while self.samples.front().is_some_and(|s| s.seq <= stored_through) {
            self.samples.pop_front();
            self.sent = self.sent.saturating_sub(1);
            gone += 1;
        }
        gone
    }

    /// The coordinator refused sample `seq` for good: it leaves the buffer. Returns whether it was here.
    pub fn refuse(&mut self, seq: u64) -> bool {
        let Some(index) = self.samples.iter().position(|s| s.seq == seq) else { return false };
        self.samples.remove(index);
        if index < self.sent {
            self.sent -= 1;
        }
        true
    }

    /// The number of samples dropped since the last call, and resets it.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Samples held: sent or not, until acknowledged.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Merges `older` (e.g. loaded from disk at start) in front of what this buffer holds, within
    /// capacity (the oldest go first when it does not fit). Samples saved without a sequence number
    /// (by an older agent) get one, and numbering continues after the highest seen.
    pub fn prepend(&mut self, older: SampleBuffer) {
        self.dropped += older.dropped;
        let mut base = older.next_seq.max(self.next_seq);
        let mut merged: VecDeque<HealthSample> = older.samples;
        for sample in &mut merged {
            if sample.seq == 0 {
                sample.seq = base;
                base += 1;
            }
        }
        // Samples taken by this process before the merge are renumbered after the older ones.
        for sample in self.samples.drain(..) {
            let mut sample = sample;
            sample.seq = base;
            base += 1;
            merged.push_back(sample);
        }
        self.next_seq = base;
        self.samples = merged;
        self.sent = 0;
        while self.samples.len() > self.capacity {
            self.pop_oldest();
        }
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
            seq: 0,
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

    /// Acknowledges everything held (a test stands in for the coordinator).
    fn ack_all(buffer: &mut SampleBuffer) {
        let last = buffer.samples.back().map_or(0, |s| s.seq);
        buffer.acknowledge(last);
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
        assert_eq!(ids(&buffer.next_batch(100)), [3, 4, 5]);
        assert_eq!(buffer.len(), 3, "sent is not acknowledged");
        ack_all(&mut buffer);
        assert!(buffer.is_empty());
    }

    #[test]
    fn flushes_oldest_first_in_batches_with_increasing_seqs() {
        let mut buffer = SampleBuffer::new(360);
        for n in 1..=250 {
            buffer.push(sample(n));
        }
        let first = buffer.next_batch(100);
        let second = buffer.next_batch(100);
        let third = buffer.next_batch(100);
        assert_eq!(ids(&first), (1..=100).collect::<Vec<_>>());
        assert_eq!(ids(&second), (101..=200).collect::<Vec<_>>());
        assert_eq!(ids(&third), (201..=250).collect::<Vec<_>>());
        assert!(buffer.next_batch(100).is_empty());
        let seqs: Vec<u64> = first.iter().chain(&second).chain(&third).map(|s| s.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs[0] > 0);
    }

    #[test]
    fn only_acknowledged_or_refused_samples_leave_and_a_new_stream_resends_the_rest() {
        let mut buffer = SampleBuffer::new(10);
        for n in 1..=5 {
            buffer.push(sample(n));
        }
        let sent = buffer.next_batch(10);
        assert_eq!(buffer.acknowledge(sent[1].seq), 2, "acknowledged through the second");
        assert!(buffer.refuse(sent[3].seq), "the fourth refused");
        assert!(!buffer.refuse(sent[3].seq));
        buffer.push(sample(6));
        assert_eq!(ids(&buffer.next_batch(10)), [6], "only what this stream has not seen");
        buffer.resend_all();
        assert_eq!(ids(&buffer.next_batch(10)), [3, 5, 6], "unacknowledged samples go again, oldest first");
        assert_eq!(buffer.take_dropped(), 0);
    }

    #[test]
    fn survives_a_save_and_load_and_keeps_numbering_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buffer.json");
        assert!(SampleBuffer::load(&path).unwrap().is_none());
        let mut buffer = SampleBuffer::new(2);
        for n in 1..=3 {
            buffer.push(sample(n));
        }
        let saved_seqs: Vec<u64> = buffer.samples.iter().map(|s| s.seq).collect();
        buffer.save(&path).unwrap();
        let loaded = SampleBuffer::load(&path).unwrap().unwrap();
        let mut fresh = SampleBuffer::new(10);
        fresh.push(sample(9));
        fresh.prepend(loaded);
        assert_eq!(fresh.take_dropped(), 1);
        let batch = fresh.next_batch(10);
        assert_eq!(ids(&batch), [2, 3, 9]);
        assert_eq!(batch[..2].iter().map(|s| s.seq).collect::<Vec<_>>(), saved_seqs, "saved samples keep their seq");
        assert!(batch[2].seq > batch[1].seq, "numbering goes on after the saved ones");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(SampleBuffer::load(&path), Err(BufferError::Parse { .. })));
    }
}
