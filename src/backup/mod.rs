//! Backups and restore. A backup is a consistent copy of the event log up to a sequence
//! number (the log is append-only, so reading it up to the head seen at the start is a
//! snapshot), optionally with the artifact files, written while the server keeps
//! serving, in the format `proto/arbor/v1/backup.proto` documents. `restore` rebuilds a
//! store from a full backup and the incremental ones after it, after checking every
//! file's structure and checksum, into a new data directory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};

use crate::domain::Error;
use crate::pb::{self, backup_record::Record};
use crate::store::Store;

/// The format version `proto/arbor/v1/backup.proto` describes.
pub const FORMAT_VERSION: u32 = 1;
/// Events read from the log at a time while writing a backup.
const EVENTS_PER_READ: usize = 1024;
/// Largest artifact chunk.
const ARTIFACT_CHUNK: usize = 1 << 20;
/// Largest record a reader accepts: an artifact chunk, or an event with 15 MB of text.
const MAX_RECORD: usize = 64 << 20;

/// What a backup holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub from_seq: u64,
    pub to_seq: u64,
    pub events: u64,
    pub artifact_files: u64,
    pub artifact_bytes: u64,
    /// Size of the file.
    pub bytes: u64,
}

fn io(e: std::io::Error) -> Error {
    Error::Storage(sled::Error::Io(e))
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn record(&mut self, record: Record) -> Result<(), Error> {
        let bytes = pb::BackupRecord {
            record: Some(record),
        }
        .encode_length_delimited_to_vec();
        self.hasher.update(&bytes);
        self.bytes += bytes.len() as u64;
        self.inner.write_all(&bytes).map_err(io)
    }
}

/// Writes a backup of `store`'s log from `from_seq` up to `to_seq` (the head when the
/// backup began: `Store::committed_seq`) and, with `artifacts`, of every artifact file.
pub fn write(
    store: &Store,
    from_seq: u64,
    to_seq: u64,
    with_artifacts: bool,
    out: impl Write,
) -> Result<Summary, Error> {
    let from_seq = from_seq.max(1);
    let mut w = Hashing {
        inner: out,
        hasher: Sha256::new(),
        bytes: 0,
    };
    w.record(Record::Header(pb::BackupHeader {
        format_version: FORMAT_VERSION,
        from_seq,
        to_seq,
        created_at: chrono::Utc::now().timestamp_millis(),
        arbor_version: env!("CARGO_PKG_VERSION").into(),
        with_artifacts,
    }))?;
    let mut summary = Summary {
        from_seq,
        to_seq,
        ..Summary::default()
    };
    let mut next = from_seq;
    while next <= to_seq {
        let events = crate::stream::EventSource::read_log(store, next, to_seq, EVENTS_PER_READ)?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Err(Error::Corrupt(format!(
                "the log ends before event {next} of {to_seq}"
            )));
        };
        for ev in events {
            if ev.seq != next {
                return Err(Error::Corrupt(format!(
                    "the log has a gap: expected event {next}, found {}",
                    ev.seq
                )));
            }
            next += 1;
            summary.events += 1;
            w.record(Record::Event(ev))?;
        }
        debug_assert!(last + 1 == next);
    }
    if with_artifacts {
        let root = store.artifacts().root().to_path_buf();
        for rel in artifact_files(&root)? {
            let mut file = std::fs::File::open(root.join(&rel)).map_err(io)?;
            let mut offset = 0u64;
            let mut buf = vec![0u8; ARTIFACT_CHUNK];
            loop {
                let n = read_full(&mut file, &mut buf).map_err(io)?;
                let last = n < buf.len();
                w.record(Record::Artifact(pb::ArtifactChunk {
                    path: rel.clone(),
                    offset,
                    data: buf[..n].to_vec(),
                    last,
                }))?;
                offset += n as u64;
                if last {
                    break;
                }
            }
            summary.artifact_files += 1;
            summary.artifact_bytes += offset;
        }
    }
    let digest = w.hasher.clone().finalize().to_vec();
    w.record(Record::Trailer(pb::BackupTrailer {
        events: summary.events,
        artifact_files: summary.artifact_files,
        artifact_bytes: summary.artifact_bytes,
        sha256: digest,
    }))?;
    w.inner.flush().map_err(io)?;
    summary.bytes = w.bytes;
    Ok(summary)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Every regular file under the artifact root, relative, '/'-separated, sorted; upload
/// temporaries and symbolic links are left out.
fn artifact_files(root: &Path) -> Result<Vec<String>, Error> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_file() && !entry.file_name().to_string_lossy().starts_with(".upload-")
            {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out).map_err(io)?;
    out.sort();
    Ok(out)
}

/// A backup file read record by record, hashing as it goes.
struct Reader<R> {
    inner: R,
    hasher: Sha256,
    path: PathBuf,
}

impl<R: Read> Reader<R> {
    /// The next record, with the hash of everything before it; `None` at the end.
    fn next(&mut self) -> Result<Option<(pb::BackupRecord, Vec<u8>)>, Error> {
        let before = self.hasher.clone().finalize().to_vec();
        let mut len: u64 = 0;
        let mut prefix = Vec::with_capacity(10);
        for shift in (0..64).step_by(7) {
            let mut byte = [0u8; 1];
            match self.inner.read(&mut byte).map_err(io)? {
                0 if prefix.is_empty() => return Ok(None),
                0 => return Err(self.damaged("the file ends inside a record")),
                _ => {}
            }
            prefix.push(byte[0]);
            len |= u64::from(byte[0] & 0x7f) << shift;
            if byte[0] & 0x80 == 0 {
                break;
            }
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= MAX_RECORD)
            .ok_or_else(|| self.damaged("a record is longer than any Arbor writes"))?;
        let mut body = vec![0u8; len];
        self.inner
            .read_exact(&mut body)
            .map_err(|_| self.damaged("the file ends inside a record"))?;
        self.hasher.update(&prefix);
        self.hasher.update(&body);
        let record = pb::BackupRecord::decode(body.as_slice())
            .map_err(|e| self.damaged(&format!("a record does not decode: {e}")))?;
        Ok(Some((record, before)))
    }

    fn damaged(&self, why: &str) -> Error {
        Error::InvalidArgument(format!(
            "{} is not a complete Arbor backup: {why}",
            self.path.display()
        ))
    }
}

fn open_reader(path: &Path) -> Result<Reader<std::io::BufReader<std::fs::File>>, Error> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", path.display())))?;
    Ok(Reader {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        path: path.to_path_buf(),
    })
}

/// What a backup file says of itself, after reading it all: the header, and a summary
/// checked against the trailer and the checksum.
pub fn verify(path: &Path) -> Result<(pb::BackupHeader, Summary), Error> {
    read(path, |_| Ok(()))
}

/// Reads a whole backup file, handing each event and artifact chunk to `each`, and
/// checks its structure, counts and checksum.
fn read(
    path: &Path,
    mut each: impl FnMut(Record) -> Result<(), Error>,
) -> Result<(pb::BackupHeader, Summary), Error> {
    let mut r = open_reader(path)?;
    let header = match r.next()? {
        Some((
            pb::BackupRecord {
                record: Some(Record::Header(h)),
            },
            _,
        )) => h,
        _ => return Err(r.damaged("it does not start with a header")),
    };
    if header.format_version != FORMAT_VERSION {
        return Err(r.damaged(&format!(
            "format version {} (this Arbor reads {FORMAT_VERSION})",
            header.format_version
        )));
    }
    let mut summary = Summary {
        from_seq: header.from_seq,
        to_seq: header.to_seq,
        ..Summary::default()
    };
    let mut next_seq = header.from_seq;
    loop {
        let Some((record, hash_before)) = r.next()? else {
            return Err(r.damaged("it has no trailer (the backup did not finish)"));
        };
        match record.record {
            Some(Record::Event(ev)) => {
                if ev.seq != next_seq || ev.seq > header.to_seq {
                    return Err(r.damaged(&format!(
                        "expected event {next_seq}, found event {}",
                        ev.seq
                    )));
                }
                next_seq += 1;
                summary.events += 1;
                each(Record::Event(ev))?;
            }
            Some(Record::Artifact(chunk)) => {
                summary.artifact_bytes += chunk.data.len() as u64;
                if chunk.last {
                    summary.artifact_files += 1;
                }
                each(Record::Artifact(chunk))?;
            }
            Some(Record::Trailer(t)) => {
                if next_seq != header.to_seq + 1 {
                    return Err(r.damaged(&format!(
                        "the header promises events up to {}, the file ends at {}",
                        header.to_seq,
                        next_seq - 1
                    )));
                }
                if t.sha256 != hash_before {
                    return Err(r.damaged("its checksum does not match its contents"));
                }
                if (t.events, t.artifact_files, t.artifact_bytes)
                    != (
                        summary.events,
                        summary.artifact_files,
                        summary.artifact_bytes,
                    )
                {
                    return Err(r.damaged("its trailer's counts do not match its contents"));
                }
                if r.next()?.is_some() {
                    return Err(r.damaged("records follow the trailer"));
                }
                summary.bytes = std::fs::metadata(path).map_err(io)?.len();
                return Ok((header, summary));
            }
            _ => return Err(r.damaged("an unexpected record")),
        }
    }
}

/// What `restore` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub events: u64,
    pub artifact_files: u64,
    pub artifact_bytes: u64,
}

/// Rebuilds a store in `data_dir` (which must not hold one) from `files`: a full backup
/// and the incremental ones that follow it, in order. Every file is verified first;
/// nothing is written unless all of them are whole and continue each other. The store
/// is built beside its final place and moved there when complete.
pub fn restore(
    files: &[PathBuf],
    data_dir: &Path,
    artifacts_dir: Option<&Path>,
    cache_bytes: u64,
) -> Result<RestoreReport, Error> {
    let live = crate::db::db_path(data_dir);
    if live.exists() {
        return Err(Error::AlreadyExists(format!(
            "{} already holds a store; restore into a new data directory",
            data_dir.display()
        )));
    }
    if files.is_empty() {
        return Err(Error::invalid("name at least one backup file with --from"));
    }
    let mut expected_from = 1;
    for path in files {
        let (header, _) = verify(path)?;
        if header.from_seq != expected_from {
            return Err(Error::invalid(format!(
                "{} starts at event {}, but {}: restore takes a full backup and then each incremental one in order",
                path.display(),
                header.from_seq,
                if expected_from == 1 {
                    "a full backup starts at 1".to_string()
                } else {
                    format!("the one before ends at {}", expected_from - 1)
                }
            )));
        }
        expected_from = header.to_seq + 1;
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let staging = crate::db::staging_path(data_dir);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io)?;
    }
    let artifacts_root = artifacts_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| data_dir.join("artifacts"));
    let (db, tree) = crate::db::open_at(&staging, cache_bytes)?;
    let mut report = RestoreReport::default();
    {
        let progress = crate::log::rebuild::Progress::start("restore");
        let mut importer = crate::log::rebuild::Importer::new(&tree, 1).reporting(&progress);
        let mut open_file: Option<(String, std::fs::File, PathBuf)> = None;
        for path in files {
            read(path, |record| match record {
                Record::Event(ev) => {
                    let raw = ev.encode_to_vec();
                    importer.push(&ev, Some(raw))
                }
                Record::Artifact(chunk) => {
                    write_chunk(&artifacts_root, &mut open_file, chunk, &mut report)
                }
                _ => Ok(()),
            })?;
        }
        report.events = importer.finish()?;
    }
    crate::db::flush_bounded(
        &db,
        "the restored store",
        std::time::Duration::from_secs(300),
    )?;
    drop((db, tree));
    if !crate::db::wait_released(&staging.join("db")) {
        return Err(Error::Unavailable(
            "the restored store is still locked".into(),
        ));
    }
    std::fs::rename(&staging, &live).map_err(io)?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(report)
}

/// Appends one chunk to the artifact file it belongs to (written under a temporary
/// name, moved into place with its last chunk).
fn write_chunk(
    root: &Path,
    open_file: &mut Option<(String, std::fs::File, PathBuf)>,
    chunk: pb::ArtifactChunk,
    report: &mut RestoreReport,
) -> Result<(), Error> {
    crate::artifacts::check_path(&chunk.path)?;
    if open_file.as_ref().is_none_or(|(p, _, _)| *p != chunk.path) {
        if chunk.offset != 0 {
            return Err(Error::invalid(format!(
                "artifact {} starts at offset {}",
                chunk.path, chunk.offset
            )));
        }
        let target = root.join(&chunk.path);
        let dir = target.parent().unwrap_or(root);
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&tmp).map_err(io)?;
        *open_file = Some((chunk.path.clone(), file, tmp));
    }
    let Some((rel, file, tmp)) = open_file.as_mut() else {
        return Ok(());
    };
    file.write_all(&chunk.data).map_err(io)?;
    report.artifact_bytes += chunk.data.len() as u64;
    if chunk.last {
        file.sync_all().map_err(io)?;
        std::fs::rename(&*tmp, root.join(&*rel)).map_err(io)?;
        report.artifact_files += 1;
        *open_file = None;
    }
    Ok(())
}
