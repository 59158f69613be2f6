//! Serving a directory (jetforce's file server, hardened): files streamed
//! from disk with backpressure, an index file or a generated listing for
//! directories, CGI scripts under the CGI directory, and (opt-in) Titan
//! uploads into it (see `static_upload.rs`).
//!
//! What is refused, always with 51 so nothing is revealed: a path segment
//! that decodes to `.` or `..` or holds `/` or NUL (`%2e%2e`, `%2f`), a
//! dotfile or dot-directory (except `.well-known`), anything that resolves
//! (through symlinks) outside the root or onto a dotfile, and anything
//! that is not a regular file or a directory (a FIFO would block the
//! server). Inside the CGI directory only executable files are served, by
//! running them; nothing there is ever sent as a file.
//!
//! A generated listing names only what would be served (no dotfile, no
//! link leading out of the root or onto a dotfile, no special file).
//!
//! A directory asked for without its slash is `31` to the slash form, or
//! `59` if that URL, normalized (non-ASCII percent-encoded), is longer
//! than a header may hold.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use super::cgi::{Cgi, CgiOptions};
use super::request::Request;
use super::response::Response;
use super::router::{Context, Handler, HandlerError, Reply};
use super::static_upload::{self, TitanOptions};
use super::titan::{not_accepted, UploadReceiver};

/// Default index file of a directory.
pub const DEFAULT_INDEX_FILE: &str = "index.gmi";

/// The answer (59) for a directory asked for without its slash whose
/// slash form, normalized, is longer than a header may hold.
const TOO_LONG_TO_REDIRECT: &str = "The URL is too long to redirect to its directory form";

/// Bytes escaped in the links of a directory listing (besides controls and
/// everything outside ASCII): what would end or change a relative path
/// reference.
const LINK: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Serves the files under a root directory: files streamed with
/// backpressure, an index file or a listing for directories (a directory
/// asked for without its slash is `31` to the slash form), CGI scripts
/// under the CGI directory.
///
/// Refused with 51, so nothing is revealed: a path segment that decodes
/// to `.` or `..` or holds `/` or NUL, a dotfile or dot-directory (except
/// `.well-known`), anything that resolves through symlinks outside the
/// root or onto a dotfile, anything but regular files and directories,
/// and anything in the CGI directory that is not an executable.
///
/// ```
/// use twistor_protocols::gemini::{Request, Router, StaticFiles};
/// let dir = std::env::temp_dir().join(format!("twistor-doc-static-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("index.gmi"), "# Welcome\n").unwrap();
/// let mut app = Router::new();
/// app.fallback(StaticFiles::new(&dir).with_default_lang("en").unwrap());
/// let answer = app.answer_for_test(Request::for_test("gemini://localhost/"));
/// assert_eq!(answer.header(), "20 text/gemini; lang=en\r\n");
/// let answer = app.answer_for_test(Request::for_test("gemini://localhost/.secret"));
/// assert_eq!(answer.status().code(), 51);
/// # std::fs::remove_dir_all(dir).unwrap();
/// ```
pub struct StaticFiles {
    root: PathBuf,
    index_file: String,
    lang: Option<String>,
    cgi: Option<Cgi>,
    titan: Option<TitanOptions>,
}

impl StaticFiles {
    /// Serve `root` (resolved now; if it does not exist, every request is 51
    /// and an error is logged).
    pub fn new(root: impl AsRef<Path>) -> StaticFiles {
        let root = root.as_ref();
        let root = fs::canonicalize(root).unwrap_or_else(|e| {
            log::error!("cannot serve {}: {e}", root.display());
            root.to_path_buf()
        });
        StaticFiles {
            root,
            index_file: DEFAULT_INDEX_FILE.to_string(),
            lang: None,
            cgi: None,
            titan: None,
        }
    }

    /// The file served for a directory (default [`DEFAULT_INDEX_FILE`]).
    pub fn with_index_file(mut self, name: &str) -> StaticFiles {
        self.index_file = name.to_string();
        self
    }

    /// Add `; lang=...` to every `text/gemini` response: one or more BCP 47
    /// tags separated by commas (quoted as the specification asks).
    ///
    /// ```
    /// use twistor_protocols::gemini::StaticFiles;
    /// assert!(StaticFiles::new("/tmp").with_default_lang("en,fr").is_ok());
    /// assert!(StaticFiles::new("/tmp").with_default_lang("en\r\n20").is_err());
    /// ```
    pub fn with_default_lang(mut self, lang: &str) -> Result<StaticFiles, String> {
        let ok = !lang.is_empty()
            && lang
                .split(',')
                .all(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !ok {
            return Err(format!(
                "invalid language {lang:?}: expected BCP 47 tags such as en or en,fr"
            ));
        }
        self.lang = Some(if lang.contains(',') {
            format!("\"{lang}\"")
        } else {
            lang.to_string()
        });
        Ok(self)
    }

    /// Run the executables under `options.dir` (relative to the root) as
    /// CGI scripts.
    pub fn with_cgi(mut self, options: CgiOptions) -> StaticFiles {
        self.cgi = Some(Cgi::new(options));
        self
    }

    /// Accept Titan uploads into the directory, with the same rules as
    /// reading (no `..`, no dotfiles, nothing outside the root, nothing in
    /// the CGI directory): each written atomically (a temporary file in
    /// the target's directory, fsync, rename), `size=0` deleting. Refused
    /// if the token is empty.
    ///
    /// ```
    /// use twistor_protocols::gemini::{StaticFiles, TitanOptions};
    /// let files = StaticFiles::new("/srv/wiki").with_titan(TitanOptions::new("s3cret")).unwrap();
    /// # let _ = files;
    /// assert!(StaticFiles::new("/srv/wiki").with_titan(TitanOptions::new("")).is_err());
    /// ```
    pub fn with_titan(mut self, options: TitanOptions) -> Result<StaticFiles, String> {
        if options.token.is_empty() {
            return Err("a Titan upload token must not be empty".to_string());
        }
        self.titan = Some(options);
        Ok(self)
    }

    /// The root directory, resolved.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The MIME type for a file name (`text/gemini` with the language for
    /// `.gmi` and `.gemini`; `application/octet-stream` when unknown).
    ///
    /// ```
    /// use twistor_protocols::gemini::StaticFiles;
    /// let s = StaticFiles::new("/tmp");
    /// assert_eq!(s.mime_type("a.GMI".as_ref()), "text/gemini");
    /// assert_eq!(s.mime_type("a.png".as_ref()), "image/png");
    /// assert_eq!(s.mime_type("a.unknown-ext".as_ref()), "application/octet-stream");
    /// ```
    pub fn mime_type(&self, path: &Path) -> String {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if matches!(ext.as_deref(), Some("gmi" | "gemini")) {
            return self.gemtext_type();
        }
        mime_guess::from_path(path)
            .first_raw()
            .unwrap_or("application/octet-stream")
            .to_string()
    }

    fn gemtext_type(&self) -> String {
        match &self.lang {
            Some(l) => format!("text/gemini; lang={l}"),
            None => "text/gemini".to_string(),
        }
    }

    /// Whether `name` is hidden (a dotfile other than `.well-known`).
    pub(crate) fn hidden(name: &str) -> bool {
        name.starts_with('.') && name != ".well-known"
    }

    /// The request path as decoded segments, or `None` if one is refused.
    pub(crate) fn segments(req: &Request) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for raw in req.raw_path().split('/').filter(|s| !s.is_empty()) {
            let seg = percent_decode_str(raw).decode_utf8().ok()?.into_owned();
            if seg == "." || seg == ".." || seg.contains(['/', '\0']) || Self::hidden(&seg) {
                return None;
            }
            out.push(seg);
        }
        Some(out)
    }

    /// `path` resolved, if it exists inside the root and is not hidden.
    pub(crate) fn resolve(&self, path: &Path) -> Option<PathBuf> {
        let real = fs::canonicalize(path).ok()?;
        let rel = real.strip_prefix(&self.root).ok()?;
        let hidden = rel.components().any(|c| match c {
            Component::Normal(n) => n.to_str().map_or(true, Self::hidden),
            _ => true,
        });
        (!hidden).then_some(real)
    }

    fn serve_file(&self, real: &Path) -> Result<Response, HandlerError> {
        // Non-blocking and no symlink: a FIFO swapped in after the checks
        // cannot block the server, nor a link lead elsewhere.
        let file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(real)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(Response::not_found_default()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Response::not_found_default()),
            Err(e) => return Err(e.into()),
        };
        if !file.metadata()?.is_file() {
            return Ok(Response::not_found_default());
        }
        Ok(Response::success(self.mime_type(real))?.with_file(file))
    }

    fn listing(&self, req: &Request, dir: &Path) -> Result<Response, HandlerError> {
        let mut entries: Vec<(String, bool)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: no URL could name it
            };
            if name.starts_with('.') {
                continue;
            }
            // Only what would be served: not a link leading out of the
            // root or onto a dotfile, not a FIFO or a device.
            let Some(meta) = self
                .resolve(&entry.path())
                .and_then(|real| fs::metadata(real).ok())
            else {
                continue;
            };
            if !meta.is_dir() && !meta.is_file() {
                continue;
            }
            entries.push((name, meta.is_dir()));
        }
        entries.sort();
        let mut text = format!("# Index of {}\n\n", label(req.path()));
        if req.path() != "/" {
            text.push_str("=> ../ ..\n");
        }
        for (name, is_dir) in entries {
            let slash = if is_dir { "/" } else { "" };
            let link = utf8_percent_encode(&name, LINK);
            text.push_str(&format!("=> ./{link}{slash} {}{slash}\n", label(&name)));
        }
        Ok(Response::success(self.gemtext_type())?.with_body(text))
    }
}

/// A name as a link label: control characters (a newline would end the
/// line) shown as `?`.
fn label(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl StaticFiles {
    /// Whether `segments` fall under the CGI directory (if CGI is on).
    pub(crate) fn in_cgi_dir(&self, segments: &[String]) -> bool {
        let Some(cgi) = &self.cgi else {
            return false;
        };
        let cgi_dir: Vec<&str> = cgi.options().dir.split('/').filter(|s| !s.is_empty()).collect();
        segments.len() > cgi_dir.len() && segments.iter().zip(&cgi_dir).all(|(a, b)| a == b)
    }
}

impl Handler for StaticFiles {
    fn accept_upload(
        &self,
        req: Request,
        _: &mut Context<'_>,
    ) -> Result<Box<dyn UploadReceiver>, HandlerError> {
        match &self.titan {
            Some(options) => static_upload::accept(self, options, &req),
            None => Err(not_accepted()),
        }
    }

    fn handle(&self, req: Request, cx: &mut Context<'_>) -> Result<Reply, HandlerError> {
        let Some(segments) = Self::segments(&req) else {
            return Ok(Response::not_found_default().into());
        };
        if let Some(cgi) = &self.cgi {
            let cgi_dir: Vec<&str> = cgi.options().dir.split('/').filter(|s| !s.is_empty()).collect();
            if self.in_cgi_dir(&segments) {
                for end in cgi_dir.len() + 1..=segments.len() {
                    let candidate = segments[..end].iter().fold(self.root.clone(), |p, s| p.join(s));
                    let Some(real) = self.resolve(&candidate) else {
                        break;
                    };
                    if real.is_dir() {
                        continue;
                    }
                    if !is_executable(&real) {
                        break;
                    }
                    let script_name = format!("/{}", segments[..end].join("/"));
                    let path_info = match &segments[end..] {
                        [] => String::new(),
                        rest => format!("/{}", rest.join("/")),
                    };
                    return cgi.run(&real, &script_name, &path_info, req, cx);
                }
                return Ok(Response::not_found_default().into());
            }
        }
        let path = segments.iter().fold(self.root.clone(), |p, s| p.join(s));
        let Some(real) = self.resolve(&path) else {
            return Ok(Response::not_found_default().into());
        };
        let meta = fs::metadata(&real)?;
        if meta.is_dir() {
            if !req.raw_path().ends_with('/') {
                let mut url = req.url().clone();
                url.set_path(&format!("{}/", req.raw_path()));
                // The URL is normalized (non-ASCII percent-encoded): it can
                // outgrow a header even though the request fitted in one.
                return Ok(match Response::redirect_permanent(url.as_str()) {
                    Ok(redirect) => redirect,
                    Err(_) => Response::bad_request(TOO_LONG_TO_REDIRECT)?,
                }
                .into());
            }
            let index = real.join(&self.index_file);
            if let Some(index) = self.resolve(&index).filter(|p| p.is_file()) {
                return Ok(self.serve_file(&index)?.into());
            }
            return Ok(self.listing(&req, &real)?.into());
        }
        if meta.is_file() {
            return Ok(self.serve_file(&real)?.into());
        }
        Ok(Response::not_found_default().into())
    }
}

/// Whether someone may execute `path` (a regular file with an x bit).
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
