//! What a Titan request uploads ([`Upload`]: a file streamed from disk,
//! or bytes) and the request line that announces it ([`titan_request`]):
//! `titan://HOST/PATH;size=N;mime=T;token=X`, then exactly N bytes.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use twistor_reactor::Reactor;
use url::Url;

use super::client_error::FetchError;
use crate::producer::{BytesSource, Produced, Source};

/// What a Titan request uploads: a file (streamed from disk) or bytes,
/// with its size, MIME type and token.
///
/// ```
/// use twistor_protocols::gemini::{titan_request, Upload};
/// let upload = Upload::bytes("# New page\n").mime("text/gemini").token("s3cret");
/// let url = url::Url::parse("titan://example.org/wiki/page").unwrap();
/// assert_eq!(
///     titan_request(&url, &upload).unwrap(),
///     "titan://example.org/wiki/page;size=11;mime=text/gemini;token=s3cret"
/// );
/// ```
#[derive(Debug, Clone)]
pub struct Upload {
    pub(crate) body: UploadBody,
    pub(crate) size: u64,
    mime: Option<String>,
    token: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum UploadBody {
    File(PathBuf),
    Bytes(Arc<[u8]>),
}

impl Upload {
    /// Upload the file at `path` (its size is read now; it is opened when
    /// the connection is up and read a chunk at a time). An empty file is
    /// `size=0`, which Titan servers take as "delete".
    pub fn file(path: impl AsRef<Path>) -> io::Result<Upload> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot upload {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot upload {}: not a regular file", path.display()),
            ));
        }
        Ok(Upload {
            body: UploadBody::File(path.to_path_buf()),
            size: meta.len(),
            mime: None,
            token: None,
        })
    }

    /// Upload these bytes.
    pub fn bytes(data: impl Into<Vec<u8>>) -> Upload {
        let data: Vec<u8> = data.into();
        Upload {
            size: data.len() as u64,
            body: UploadBody::Bytes(data.into()),
            mime: None,
            token: None,
        }
    }

    /// The `mime` parameter (without one, servers assume `text/gemini`).
    pub fn mime(mut self, mime: impl Into<String>) -> Upload {
        self.mime = Some(mime.into());
        self
    }

    /// The `mime` parameter guessed from the file's name: `text/gemini`
    /// for `.gmi` and `.gemini`, the usual type for a known extension,
    /// `application/octet-stream` otherwise (bytes: unchanged).
    ///
    /// ```
    /// use twistor_protocols::gemini::{titan_request, Upload};
    /// let dir = std::env::temp_dir();
    /// let file = dir.join(format!("upload-doc-{}.png", std::process::id()));
    /// std::fs::write(&file, b"not really a PNG").unwrap();
    /// let upload = Upload::file(&file).unwrap().mime_from_name();
    /// let url = url::Url::parse("titan://example.org/cat.png").unwrap();
    /// assert!(titan_request(&url, &upload).unwrap().ends_with(";size=16;mime=image/png"));
    /// # std::fs::remove_file(file).unwrap();
    /// ```
    pub fn mime_from_name(mut self) -> Upload {
        if let UploadBody::File(path) = &self.body {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            let mime = match ext.as_deref() {
                Some("gmi" | "gemini") => "text/gemini",
                _ => mime_guess::from_path(path)
                    .first_raw()
                    .unwrap_or("application/octet-stream"),
            };
            self.mime = Some(mime.to_string());
        }
        self
    }

    /// The `token` parameter (a password the server may ask for).
    pub fn token(mut self, token: impl Into<String>) -> Upload {
        self.token = Some(token.into());
        self
    }

    /// The `size` parameter: the bytes sent after the request line.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// What a parameter value may hold as is; everything else is
/// percent-encoded (`;`, `=`, `?`, `#`, `%`, spaces...).
pub(crate) const PARAM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// A MIME type keeps its `/` and `+` (`image/svg+xml`), as Titan's
/// examples write it.
const MIME: &AsciiSet = &PARAM.remove(b'/').remove(b'+');

/// The Titan request line (without CRLF) for uploading `upload` to
/// `url`: the parameters are appended to the path, in the order `size`,
/// `mime`, `token`. A URL that already has parameters, or whose scheme is
/// not `titan`, is refused.
///
/// ```
/// use twistor_protocols::gemini::{titan_request, Upload};
/// let url = url::Url::parse("titan://example.org/notes/today.gmi").unwrap();
/// let line = titan_request(&url, &Upload::bytes("hi\n")).unwrap();
/// assert_eq!(line, "titan://example.org/notes/today.gmi;size=3");
/// let gemini = url::Url::parse("gemini://example.org/").unwrap();
/// assert!(titan_request(&gemini, &Upload::bytes("hi\n")).is_err());
/// ```
pub fn titan_request(url: &Url, upload: &Upload) -> Result<String, FetchError> {
    if url.scheme() != "titan" {
        return Err(FetchError::BadUrl(format!(
            "an upload needs a titan:// URL, not {}",
            url.scheme()
        )));
    }
    if url.path().contains(';') {
        return Err(FetchError::BadUrl(
            "the titan URL already has parameters (;...): give the URL without them".into(),
        ));
    }
    let mut params = format!(";size={}", upload.size);
    if let Some(m) = &upload.mime {
        params.push_str(&format!(";mime={}", utf8_percent_encode(m, MIME)));
    }
    if let Some(t) = &upload.token {
        params.push_str(&format!(";token={}", utf8_percent_encode(t, PARAM)));
    }
    let mut base = url.clone();
    base.set_query(None);
    base.set_fragment(None);
    let mut line = base.to_string();
    if base.path().is_empty() {
        line.push('/');
    }
    line.push_str(&params);
    if let Some(q) = url.query() {
        line.push('?');
        line.push_str(q);
    }
    Ok(line)
}

/// Exactly `size` bytes of a file: one that turns out shorter fails the
/// upload (it changed while being sent), anything past `size` is not read.
struct FileSource {
    file: File,
    remaining: u64,
    size: u64,
}

impl Source for FileSource {
    fn produce(&mut self, _: &mut Reactor, buf: &mut Vec<u8>, max: usize) -> io::Result<Produced> {
        if self.remaining == 0 {
            return Ok(Produced::End);
        }
        let want = self.remaining.min(max as u64);
        let n = (&mut self.file).take(want).read_to_end(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file ended after {} of its {} bytes (it changed while being sent)",
                    self.size - self.remaining,
                    self.size
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(Produced::Data)
    }
}

pub(crate) fn upload_source(body: &UploadBody, size: u64) -> io::Result<Box<dyn Source>> {
    Ok(match body {
        UploadBody::Bytes(b) => Box::new(BytesSource::new(b.to_vec())),
        UploadBody::File(path) => {
            let file = File::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
            Box::new(FileSource {
                file,
                remaining: size,
                size,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titan_lines() {
        let url = Url::parse("titan://example.org").unwrap();
        let up = Upload::bytes(vec![0; 3]).mime("image/svg+xml").token("a;b=c d");
        assert_eq!(
            titan_request(&url, &up).unwrap(),
            "titan://example.org/;size=3;mime=image/svg+xml;token=a%3Bb%3Dc%20d"
        );
        let url = Url::parse("titan://example.org/x;size=3").unwrap();
        assert!(titan_request(&url, &up).is_err());
        let url = Url::parse("gemini://example.org/x").unwrap();
        assert!(titan_request(&url, &up).is_err());
        let url = Url::parse("titan://example.org/x?q").unwrap();
        assert_eq!(
            titan_request(&url, &Upload::bytes(Vec::new())).unwrap(),
            "titan://example.org/x;size=0?q"
        );
    }
}
