//! `Watermark`: the highest log index known durable, kept in its own file (`ACKED`) beside sled.
//!
//! sled recovers a damaged log by cutting it at the first bad record, the way it recovers a torn
//! tail after a crash, so a store cut short or changed in the middle would come back shorter and
//! look healthy. The watermark is the check that tells the two apart: a store whose log ends below
//! it has lost entries that were durable, so it is damaged (see `check.rs`).
//!
//! It may lag (a crash can leave it below the last durable entry), but it is never above what
//! sled has made durable: it is written only after a flush that covers the index it names, and
//! lowered, durably, before a truncation or a reset removes entries. Writes run on one
//! `ekka-watermark` thread per data dir at most every [`WATERMARK_INTERVAL`], off the write path;
//! a lowering runs in the caller and waits for its sync.
//!
//! File format: two 32-byte slots, at offsets 0 and 512 (different sectors), written in turn:
//! `b"EKWM"`, version (u32), sequence (u64), index (u64), CRC-32 of the first 24 bytes (u32),
//! 4 zero bytes, all big-endian. The valid slot with the higher sequence wins, so a torn write of
//! one slot leaves the other.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{mpsc, Arc};

use parking_lot::Mutex;
use std::time::Duration;

/// The watermark file in the data dir.
pub(crate) const WATERMARK_FILE: &str = "ACKED";
/// The least time between two watermark writes: at most this much durable log is checked only
/// by sled's own recovery.
pub(crate) const WATERMARK_INTERVAL: Duration = Duration::from_millis(20);

const MAGIC: &[u8; 4] = b"EKWM";
const VERSION: u32 = 1;
const SLOT_LEN: usize = 32;
const SLOT_OFFSETS: [u64; 2] = [0, 512];

fn encode_slot(seq: u64, index: u64) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[0..4].copy_from_slice(MAGIC);
    b[4..8].copy_from_slice(&VERSION.to_be_bytes());
    b[8..16].copy_from_slice(&seq.to_be_bytes());
    b[16..24].copy_from_slice(&index.to_be_bytes());
    let crc = crc32fast::hash(&b[0..24]);
    b[24..28].copy_from_slice(&crc.to_be_bytes());
    b
}

/// `(sequence, index)` of a valid slot.
fn decode_slot(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() < SLOT_LEN || &b[0..4] != MAGIC {
        return None;
    }
    let crc = u32::from_be_bytes(b[24..28].try_into().ok()?);
    if crc != crc32fast::hash(&b[0..24]) || b[4..8] != VERSION.to_be_bytes() {
        return None;
    }
    let seq = u64::from_be_bytes(b[8..16].try_into().ok()?);
    let index = u64::from_be_bytes(b[16..24].try_into().ok()?);
    Some((seq, index))
}

/// Reads the watermark of the data dir at `path` without changing anything: `Ok(None)` when the
/// file does not exist (a dir made before watermarks), `Err` with a reason when it exists but
/// holds no valid slot.
pub(crate) fn read(path: &Path) -> io::Result<Result<Option<u64>, String>> {
    Ok(read_slot(path)?.map(|slot| slot.map(|(_, index)| index)))
}

/// `(sequence, index)` of the winning slot; see [`read`].
fn read_slot(path: &Path) -> io::Result<Result<Option<(u64, u64)>, String>> {
    let bytes = match std::fs::read(path.join(WATERMARK_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(None)),
        Err(e) => return Err(e),
    };
    let best = SLOT_OFFSETS
        .iter()
        .filter_map(|&o| bytes.get(o as usize..).and_then(decode_slot))
        .max_by_key(|(seq, _)| *seq);
    Ok(match best {
        Some(slot) => Ok(Some(slot)),
        None => Err(format!(
            "{WATERMARK_FILE} ({} bytes) holds no valid record",
            bytes.len()
        )),
    })
}

/// The open watermark file and what it says.
struct Slots {
    file: File,
    seq: u64,
    index: u64,
    /// Bumped by every lowering, so a raise computed before it is dropped.
    generation: u64,
}

impl Slots {
    fn write(&mut self, index: u64) -> io::Result<()> {
        let seq = self.seq + 1;
        let slot = SLOT_OFFSETS[(seq % 2) as usize];
        self.file.write_all_at(&encode_slot(seq, index), slot)?;
        self.file.sync_data()?;
        self.seq = seq;
        self.index = index;
        Ok(())
    }
}

/// Appends numbered by the flusher and not yet known durable: `(write number, last index)`.
#[derive(Default)]
struct Pending {
    appends: VecDeque<(u64, u64)>,
    generation: u64,
}

/// A handle on a data dir's watermark. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Watermark {
    slots: Arc<Mutex<Slots>>,
    pending: Arc<Mutex<Pending>>,
}

impl Watermark {
    /// Opens (creating at 0, durably) the watermark file of the data dir at `path`.
    pub(crate) fn open(path: &Path) -> io::Result<Watermark> {
        let current = read_slot(path)?.map_err(io::Error::other)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join(WATERMARK_FILE))?;
        let mut slots = Slots {
            file,
            seq: 0,
            index: 0,
            generation: 0,
        };
        match current {
            Some((seq, index)) => {
                // Continue the sequence of the slot that won.
                slots.seq = seq;
                slots.index = index;
            }
            None => {
                slots.write(0)?;
                File::open(path)?.sync_all()?;
            }
        }
        Ok(Watermark {
            slots: Arc::new(Mutex::new(slots)),
            pending: Arc::new(Mutex::new(Pending::default())),
        })
    }

    /// The index the file holds now.
    #[cfg(test)]
    fn index(&self) -> u64 {
        self.slots.lock().index
    }

    /// Records that the append numbered `seq` by the flusher ends at `last_index`.
    pub(crate) fn noted(&self, seq: u64, last_index: u64) {
        let mut p = self.pending.lock();
        p.appends.push_back((seq, last_index));
    }

    /// Lowers the watermark to at most `index`, durably, before entries above it are removed.
    pub(crate) fn lower(&self, index: u64) -> io::Result<()> {
        let mut slots = self.slots.lock();
        {
            let mut p = self.pending.lock();
            p.generation += 1;
            p.appends.clear();
            slots.generation = p.generation;
        }
        if slots.index > index {
            slots.write(index)?;
        }
        Ok(())
    }

    /// Raises the watermark to the last index of the appends numbered up to `durable_seq`
    /// (`u64::MAX`: every append noted so far, once everything is known durable).
    pub(crate) fn raise(&self, durable_seq: u64) -> io::Result<()> {
        let (generation, best) = {
            let mut p = self.pending.lock();
            let mut best = None;
            while let Some(&(seq, last)) = p.appends.front() {
                if seq > durable_seq {
                    break;
                }
                best = Some(best.map_or(last, |b: u64| b.max(last)));
                p.appends.pop_front();
            }
            (p.generation, best)
        };
        let Some(index) = best else { return Ok(()) };
        let mut slots = self.slots.lock();
        if slots.generation == generation && index > slots.index {
            slots.write(index)?;
        }
        Ok(())
    }

    /// Starts the thread that raises the watermark after flushes: each message on the returned
    /// channel is the flusher's durable write number. The thread ends when the sender is dropped.
    pub(crate) fn start_thread(&self) -> io::Result<mpsc::Sender<u64>> {
        let (tx, rx) = mpsc::channel::<u64>();
        let wm = self.clone();
        std::thread::Builder::new()
            .name("ekka-watermark".into())
            .spawn(move || {
                while let Ok(mut seq) = rx.recv() {
                    seq = rx.try_iter().fold(seq, u64::max);
                    if let Err(e) = wm.raise(seq) {
                        // Not fatal: the watermark only lags; the next damage check is weaker.
                        tracing::warn!(error = %e, "cannot write the durable-index watermark");
                    }
                    std::thread::sleep(WATERMARK_INTERVAL);
                }
            })?;
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raised_after_a_flush_lowered_at_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), Ok(None));
        let wm = Watermark::open(dir.path()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Ok(Some(0)));
        wm.noted(1, 5);
        wm.noted(2, 9);
        wm.raise(1).unwrap();
        assert_eq!(
            read(dir.path()).unwrap(),
            Ok(Some(5)),
            "only what is durable"
        );
        wm.raise(2).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Ok(Some(9)));
        wm.noted(3, 12);
        wm.lower(7).unwrap();
        wm.raise(3).unwrap();
        assert_eq!(
            read(dir.path()).unwrap(),
            Ok(Some(7)),
            "an append from before a lowering never raises it"
        );
        drop(wm);
        let wm = Watermark::open(dir.path()).unwrap();
        assert_eq!(wm.index(), 7);
    }

    #[test]
    fn a_torn_slot_leaves_the_other_and_two_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wm = Watermark::open(dir.path()).unwrap();
        wm.noted(1, 4);
        wm.raise(1).unwrap();
        drop(wm);
        let p = dir.path().join(WATERMARK_FILE);
        let mut bytes = std::fs::read(&p).unwrap();
        // The last write (sequence 2) went to slot 0; tear it.
        bytes[10] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Ok(Some(0)));
        bytes[512 + 17] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        assert!(read(dir.path()).unwrap().is_err());
    }
}
