//! The artifact store: files under a root directory (default `<data-dir>/artifacts`),
//! laid out as MLflow's `mlflow-artifacts:` paths (`<experiment>/<run>/artifacts/...`,
//! `<experiment>/models/<model>/artifacts/...`). Uploads stream to a temporary file that
//! is synced and renamed into place, so a reader never sees half a file and an
//! acknowledged upload survives a crash; downloads stream from disk.

use std::path::{Component, Path, PathBuf};

use tokio::io::AsyncWriteExt;

use crate::domain::Error;

#[derive(Clone, Debug)]
pub struct ArtifactStore {
    root: PathBuf,
    /// Bytes kept free on the root's disk: an upload that would go below it is refused
    /// (and removed), so artifacts cannot fill the disk under the database.
    min_free: u64,
}

/// How much of an upload is written between checks of the disk reserve.
const RESERVE_CHECK_EVERY: u64 = 8 * 1024 * 1024;

/// One entry of a listing: a name relative to the listed directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub path: String,
    pub is_dir: bool,
    pub file_size: Option<u64>,
}

/// An artifact file's I/O error, by kind: resource exhaustion (out of file
/// descriptors, memory or disk) is a 503 that says why, so clients retry instead of
/// concluding the file is gone; anything else is a logged 500. Absence is the caller's
/// to say (`NotFound` with the path), since only it knows what was asked for.
fn io(e: std::io::Error) -> Error {
    use std::io::ErrorKind;
    // EMFILE, ENFILE, ENOMEM, EDQUOT: raw numbers, as std has no kinds for all of them.
    let exhausted = matches!(e.raw_os_error(), Some(24 | 23 | 12 | 122))
        || matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::OutOfMemory);
    if exhausted {
        tracing::warn!(error = %e, "artifact store: out of resources");
        let why = match e.raw_os_error() {
            Some(24 | 23) => "the server is out of file descriptors".to_string(),
            _ if e.kind() == ErrorKind::StorageFull => {
                "the disk holding the artifacts is full".to_string()
            }
            _ => format!("the server is out of resources ({e})"),
        };
        return Error::Unavailable(format!("{why}; retry later"));
    }
    Error::Internal(format!("artifact store: {e}"))
}

/// `io`, but a missing file or directory is `not_found`.
fn io_or(e: std::io::Error, not_found: impl FnOnce() -> Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        not_found()
    } else {
        io(e)
    }
}

fn invalid_path() -> Error {
    Error::invalid("Invalid path")
}

/// Refuses what could leave the root, as MLflow's `validate_path_is_safe` does: absolute
/// paths, `..`, backslashes, `#`, NULs and drive letters. A `.` segment stays where it
/// is, so it is allowed (`download_artifacts(run_id, ".")` asks for everything).
pub fn check_path(rel: &str) -> Result<(), Error> {
    if rel.starts_with('/')
        || rel.contains('\\')
        || rel.contains('\0')
        || rel.contains('#')
        || rel.get(1..2) == Some(":")
    {
        return Err(invalid_path());
    }
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => return Err(invalid_path()),
        }
    }
    if rel.split('/').any(|part| part == "..") {
        return Err(invalid_path());
    }
    Ok(())
}

impl ArtifactStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            min_free: 0,
        }
    }

    /// The same store, keeping `bytes` free on its disk.
    pub fn with_reserve(self, bytes: u64) -> Self {
        Self {
            min_free: bytes,
            ..self
        }
    }

    /// `Unavailable` while the root's disk is below the reserve.
    fn check_reserve(&self) -> Result<(), Error> {
        let probe = if self.root.exists() {
            self.root.as_path()
        } else {
            self.root.parent().unwrap_or(&self.root)
        };
        crate::db::space::check_reserve(probe, self.min_free).map_err(Error::Unavailable)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `rel` under the root. Symbolic links inside the root are never
    /// followed: a path through one (or naming one) is refused, so a link planted in the
    /// store cannot lead reads or writes outside it.
    async fn resolve(&self, rel: &str) -> Result<PathBuf, Error> {
        let rel = rel.trim_end_matches('/');
        check_path(rel)?;
        let mut path = self.root.clone();
        for part in Path::new(rel).components() {
            let Component::Normal(part) = part else {
                continue;
            };
            path.push(part);
            if let Ok(meta) = tokio::fs::symlink_metadata(&path).await
                && meta.file_type().is_symlink()
            {
                return Err(Error::invalid(format!(
                    "Invalid path: {rel} passes through a symbolic link"
                )));
            }
        }
        Ok(path)
    }

    /// Streams `body` into the file at `rel`, replacing it atomically; returns its size.
    pub async fn write<S, E>(&self, rel: &str, mut body: S) -> Result<u64, Error>
    where
        S: tokio_stream::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use tokio_stream::StreamExt;
        if rel.trim_end_matches('/').is_empty() {
            return Err(invalid_path());
        }
        let target = self.resolve(rel).await?;
        // An upload replaces a file; it cannot replace a directory, nor go below a file.
        if tokio::fs::metadata(&target).await.is_ok_and(|m| m.is_dir()) {
            return Err(Error::invalid(format!(
                "Invalid path: {rel} is a directory"
            )));
        }
        let dir = target.parent().ok_or_else(invalid_path)?.to_path_buf();
        let mut ancestor = dir.as_path();
        while ancestor.starts_with(&self.root) && ancestor != self.root {
            if tokio::fs::metadata(ancestor)
                .await
                .is_ok_and(|m| m.is_file())
            {
                return Err(Error::invalid(format!(
                    "Invalid path: {} is a file, so nothing can be stored below it",
                    ancestor
                        .strip_prefix(&self.root)
                        .unwrap_or(ancestor)
                        .display()
                )));
            }
            ancestor = ancestor.parent().unwrap_or(&self.root);
        }
        self.check_reserve()?;
        tokio::fs::create_dir_all(&dir).await.map_err(io)?;
        let tmp = dir.join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut size = 0u64;
        let mut next_check = RESERVE_CHECK_EVERY;
        let written: Result<(), Error> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk
                    .map_err(|e| Error::invalid(format!("the upload was interrupted: {e}")))?;
                size += chunk.len() as u64;
                if size >= next_check {
                    self.check_reserve()?;
                    next_check = size + RESERVE_CHECK_EVERY;
                }
                file.write_all(&chunk).await.map_err(io)?;
            }
            file.sync_all().await.map_err(io)?;
            Ok(())
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        if let Err(e) = tokio::fs::rename(&tmp, &target).await {
            // Never leave a hidden upload behind, whatever went wrong.
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io(e));
        }
        // The rename is durable once the directory is synced.
        tokio::fs::File::open(&dir)
            .await
            .map_err(io)?
            .sync_all()
            .await
            .map_err(io)?;
        Ok(size)
    }

    /// The file at `rel` for reading, with its size; `NotFound` if it is not a file.
    pub async fn open(&self, rel: &str) -> Result<(tokio::fs::File, u64), Error> {
        let path = self.resolve(rel).await?;
        let not_found = || Error::NotFound(format!("File {rel} not found"));
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| io_or(e, not_found))?;
        if !meta.is_file() {
            return Err(not_found());
        }
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_or(e, not_found))?;
        Ok((file, meta.len()))
    }

    /// The entries of the directory `rel`, sorted; empty for a missing path or a file.
    pub async fn list(&self, rel: &str) -> Result<Vec<FileInfo>, Error> {
        let path = self.resolve(rel).await?;
        let mut out = Vec::new();
        let mut entries = match tokio::fs::read_dir(&path).await {
            Ok(entries) => entries,
            // Nothing there, or a file: an empty listing, as MLflow answers.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(out);
            }
            Err(e) => return Err(io(e)),
        };
        while let Some(e) = entries.next_entry().await.map_err(io)? {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".upload-") {
                continue;
            }
            let meta = e.metadata().await.map_err(io)?;
            out.push(FileInfo {
                path: name,
                is_dir: meta.is_dir(),
                file_size: meta.is_file().then_some(meta.len()),
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Removes the file or directory at `rel`; `NotFound` if there is none.
    pub async fn delete(&self, rel: &str) -> Result<(), Error> {
        if rel.trim_end_matches('/').is_empty() {
            return Err(invalid_path());
        }
        let path = self.resolve(rel).await?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| io_or(e, || Error::NotFound(format!("File {rel} not found"))))?;
        if meta.is_dir() {
            tokio::fs::remove_dir_all(&path).await.map_err(io)
        } else {
            tokio::fs::remove_file(&path).await.map_err(io)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Error, check_path, io, io_or};

    /// I/O errors map by kind: absence is NotFound, exhaustion a 503 that says why,
    /// anything else internal; never "not found" for a file that is there.
    #[test]
    fn io_errors_map_by_kind() {
        let os = std::io::Error::from_raw_os_error;
        let gone = || Error::NotFound("gone".into());
        assert!(matches!(io_or(os(2), gone), Error::NotFound(_)));
        for exhausted in [24, 23, 12] {
            assert!(
                matches!(io_or(os(exhausted), gone), Error::Unavailable(_)),
                "{exhausted}"
            );
        }
        let Error::Unavailable(why) = io(os(24)) else {
            panic!("EMFILE is unavailable")
        };
        assert!(why.contains("file descriptors"), "{why}");
        assert!(matches!(
            io(std::io::Error::from(std::io::ErrorKind::StorageFull)),
            Error::Unavailable(_)
        ));
        assert!(matches!(io_or(os(13), gone), Error::Internal(_)));
        assert!(matches!(io_or(os(5), gone), Error::Internal(_)));
    }

    /// What could leave the artifact root is refused; `.` segments, which stay, are not.
    #[test]
    fn traversal_is_refused() {
        for ok in [
            "a.txt",
            "1/abc/artifacts/dir/file.bin",
            "x y/z",
            "",
            ".",
            "a/./b",
        ] {
            check_path(ok).unwrap();
        }
        for bad in [
            "../x",
            "a/../../b",
            "/etc/passwd",
            "a/#b",
            "c:/x",
            "a\\..\\b",
            "a/\0",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }
}
