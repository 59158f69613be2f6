//! Titan uploads into a served directory (opt-in per virtual host, with a
//! token): [`TitanOptions`] and the receiver that writes a body to disk.
//!
//! The target path follows the rules for reading: a segment that decodes
//! to `.` or `..` or holds `/` or NUL, a dotfile, a directory that
//! resolves outside the root, and anything under the CGI directory are
//! refused with `51`, so nothing is revealed and nothing is written
//! outside the root. The target's directory must exist; a directory
//! itself is not a target (`50`).
//!
//! A body is written as it arrives, one synchronous write per chunk read
//! (so memory holds one read, never the file), to a temporary dotfile
//! created next to the target (never served, never listed); once the
//! declared size is in, the file is fsynced, renamed over the target and
//! the directory fsynced: a reader sees the old file or the new one, never
//! half of one. An upload that does not complete (the client stalls or
//! goes away, a write fails) removes its temporary file. `size=0` deletes
//! the target.
//!
//! Answers: `30` to the resource's `gemini://` URL after an upload (what
//! Phoebe, the reference Titan server, does: the client shows the new
//! page; `20` with a line of text if that URL, percent-encoded, is too
//! long for a header); `20` with a line of text after a delete (the resource is gone,
//! so a redirect would only lead to `51`); `59` for a missing or wrong
//! token, as Phoebe answers (the `6x` codes are about client
//! certificates: a client answers them by offering an identity, which
//! would mislead); `59` for a size over the limit, before the body is
//! read; `40` if the disk refuses.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use twistor_reactor::Reactor;

use super::request::Request;
use super::response::Response;
use super::router::{check_upload_size, Context, HandlerError, Reply};
use super::static_files::StaticFiles;
use super::titan::{UploadReceiver, DEFAULT_MAX_UPLOAD};

/// Titan uploads into a [`StaticFiles`] directory (see
/// [`StaticFiles::with_titan`]).
///
/// | knob | default |
/// |---|---|
/// | [`token`](Self::token) | required |
/// | [`max_size`](Self::max_size) | 10 MiB ([`DEFAULT_MAX_UPLOAD`]) |
///
/// ```
/// use twistor_protocols::gemini::TitanOptions;
/// let opts = TitanOptions { max_size: 1 << 20, ..TitanOptions::new("s3cret") };
/// assert_eq!(opts.token, "s3cret");
/// ```
#[derive(Clone)]
pub struct TitanOptions {
    /// The token every upload must carry (`;token=...`).
    pub token: String,
    /// The largest upload accepted, in bytes; a larger one is `59`.
    pub max_size: u64,
}

impl TitanOptions {
    /// Uploads carrying `token`, up to [`DEFAULT_MAX_UPLOAD`] bytes.
    pub fn new(token: impl Into<String>) -> TitanOptions {
        TitanOptions {
            token: token.into(),
            max_size: DEFAULT_MAX_UPLOAD,
        }
    }
}

impl std::fmt::Debug for TitanOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in a log line.
        f.debug_struct("TitanOptions")
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

fn answer(r: Result<Response, super::InvalidMeta>) -> HandlerError {
    HandlerError::Answer(r.expect("constant metas are valid"))
}

/// Whether two tokens are equal, in time that depends on their lengths
/// only.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Check an upload to `files` and make its receiver (or refuse it, before
/// a byte of the body is read).
pub(crate) fn accept(
    files: &StaticFiles,
    options: &TitanOptions,
    req: &Request,
) -> Result<Box<dyn UploadReceiver>, HandlerError> {
    let titan = req.titan().expect("an upload has Titan parameters");
    match titan.token.as_deref() {
        None => {
            return Err(answer(Response::bad_request(
                "A token is required to upload here",
            )))
        }
        Some(t) if !same_token(t, &options.token) => {
            log::info!("{}: a Titan upload with a wrong token refused", req.conn_id());
            return Err(answer(Response::bad_request("Wrong token")));
        }
        Some(_) => {}
    }
    check_upload_size(req, options.max_size)?;
    let not_found = || answer(Ok(Response::not_found_default()));
    let segments = StaticFiles::segments(req).ok_or_else(not_found)?;
    let Some((name, dirs)) = segments.split_last() else {
        return Err(answer(Response::permanent_failure(
            "A directory is not an upload target",
        )));
    };
    if req.raw_path().ends_with('/') {
        return Err(answer(Response::permanent_failure(
            "A directory is not an upload target",
        )));
    }
    if files.in_cgi_dir(&segments) {
        return Err(not_found());
    }
    let parent = dirs.iter().fold(files.root().to_path_buf(), |p, s| p.join(s));
    let dir = files
        .resolve(&parent)
        .filter(|d| d.is_dir())
        .ok_or_else(not_found)?;
    let target = dir.join(name);
    let existing = fs::symlink_metadata(&target).ok();
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(answer(Response::permanent_failure(
            "A directory is not an upload target",
        )));
    }
    if titan.size == 0 {
        if existing.is_none() {
            return Err(not_found());
        }
        return Ok(Box::new(Delete { target, dir }));
    }
    let (temp, file) = temp_file(&dir).map_err(|e| {
        log::error!("cannot create an upload file in {}: {e}", dir.display());
        answer(Response::temporary_failure("The upload could not be stored"))
    })?;
    log::debug!(
        "{}: receiving {} bytes of {} for {}",
        req.conn_id(),
        titan.size,
        titan.mime,
        target.display()
    );
    Ok(Box::new(FileUpload {
        file: Some(file),
        temp: Some(temp),
        target,
        dir,
        url: req.gemini_url(),
    }))
}

/// A new temporary dotfile in `dir`, created exclusively (never a file or
/// link that was there).
fn temp_file(dir: &Path) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".titan-upload-{}-{n}.tmp", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Make a rename or a removal in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes an upload to its temporary file, then renames it into place.
struct FileUpload {
    file: Option<File>,
    /// The temporary file, while it exists (removed on drop).
    temp: Option<PathBuf>,
    target: PathBuf,
    dir: PathBuf,
    url: String,
}

impl FileUpload {
    fn failed(&mut self, what: &str, e: io::Error) -> HandlerError {
        log::error!("{what} {}: {e}", self.target.display());
        self.discard();
        answer(Response::temporary_failure("The upload could not be stored"))
    }

    fn discard(&mut self) {
        self.file = None;
        if let Some(temp) = self.temp.take() {
            if let Err(e) = fs::remove_file(&temp) {
                log::error!("cannot remove {}: {e}", temp.display());
            }
        }
    }

    fn commit(&mut self) -> io::Result<()> {
        let file = self.file.take().expect("the file is open until the end");
        file.sync_all()?;
        drop(file);
        let temp = self
            .temp
            .as_ref()
            .expect("the temporary file exists until the end");
        fs::rename(temp, &self.target)?;
        self.temp = None;
        sync_dir(&self.dir)
    }
}

impl UploadReceiver for FileUpload {
    fn data(&mut self, _: &mut Context<'_>, chunk: &[u8]) -> Result<(), HandlerError> {
        let res = match &mut self.file {
            Some(f) => f.write_all(chunk),
            None => return Ok(()),
        };
        res.map_err(|e| self.failed("cannot write the upload for", e))
    }

    fn end(mut self: Box<Self>, _: &mut Context<'_>) -> Result<Reply, HandlerError> {
        if let Err(e) = self.commit() {
            return Err(self.failed("cannot store the upload for", e));
        }
        log::info!("stored an upload as {}", self.target.display());
        // The URL is normalized (non-ASCII percent-encoded): it can
        // outgrow a header even though the request fitted in one.
        Ok(match Response::redirect(self.url.clone()) {
            Ok(redirect) => redirect,
            Err(_) => Response::gemtext("Stored.\n")?,
        }
        .into())
    }

    fn abort(mut self: Box<Self>, _: &mut Reactor) {
        log::info!("an upload for {} did not complete", self.target.display());
        self.discard();
    }
}

impl Drop for FileUpload {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Deletes the target (`size=0`).
struct Delete {
    target: PathBuf,
    dir: PathBuf,
}

impl UploadReceiver for Delete {
    fn data(&mut self, _: &mut Context<'_>, _: &[u8]) -> Result<(), HandlerError> {
        Ok(())
    }

    fn end(self: Box<Self>, _: &mut Context<'_>) -> Result<Reply, HandlerError> {
        match fs::remove_file(&self.target).and_then(|()| sync_dir(&self.dir)) {
            Ok(()) => {
                log::info!("deleted {}", self.target.display());
                Ok(Response::gemtext("Deleted.\n")?.into())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Response::not_found_default().into()),
            Err(e) => {
                log::error!("cannot delete {}: {e}", self.target.display());
                Ok(Response::temporary_failure("The resource could not be deleted")?.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
        assert!(!same_token("", "a"));
    }
}
