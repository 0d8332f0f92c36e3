//! Token files that stay secret and can be rotated: refused when group or others may read (or
//! write) them, and re-read when they change.
//!
//! - **Private or refused.** A token that other users of the node can read is no secret: the
//!   file (after following symlinks, as a Kubernetes Secret volume's `token -> ..data/token`
//!   chain) must grant group and others nothing beyond execute bits (mode `0600`, `0400`).
//!   The mode is checked on the opened descriptor (`fstat`), so a file swapped between the
//!   check and the read is still the file checked.
//! - **Rotation without restart.** [`TokenFile::current`] compares the file's identity
//!   (device, inode, size, modification and change times, mode — `stat` through the symlinks)
//!   with what it read last, and re-reads only when it differs: one `stat` per use, no watcher
//!   thread, nothing to race with. A Secret update (the kubelet swaps the `..data` link) or an
//!   edit in place both change it. A file that turns unusable (emptied, made readable by others)
//!   is an error on every use until it is fixed; the old token is not kept, so a leaked token
//!   cannot outlive the fix.

use std::fs::{File, Metadata};
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::{TokenFileError, normalize};

/// Mode bits group and others must not have on a token file (read and write).
const EXPOSING_BITS: u32 = 0o066;

/// Largest token file read: a token is a line, not a document.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// What identifies one version of a file: when any of it changes, the file is read again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    mode: u32,
}

impl Stamp {
    fn of(m: &Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            mode: m.mode(),
        }
    }
}

/// Reads a token file after checking, on the opened descriptor, that only its owner may read
/// or write it. Returns the token (trimmed, not empty) and the stamp of the version read.
fn read_private(path: &Path) -> Result<(String, Stamp), TokenFileError> {
    let unreadable = |e: std::io::Error| TokenFileError::Unreadable {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut file = File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(TokenFileError::Unreadable {
            path: path.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    if meta.mode() & EXPOSING_BITS != 0 {
        return Err(TokenFileError::Exposed {
            path: path.to_owned(),
            real: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()),
            mode: meta.mode() & 0o7777,
        });
    }
    let mut text = String::new();
    file.by_ref()
        .take(MAX_TOKEN_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    let token = normalize(Some(text)).ok_or_else(|| TokenFileError::Empty {
        path: path.to_owned(),
    })?;
    // `Authorization: Bearer <token>` carries visible ASCII only: a token with anything else
    // could never be sent, and every client would be locked out with a puzzling 401.
    if let Some(bad) = token.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(TokenFileError::Unsendable {
            path: path.to_owned(),
            bad,
        });
    }
    Ok((token, Stamp::of(&meta)))
}

/// Reads a private token file once (see the module doc): the check behind
/// [`super::read_token_file`].
pub(super) fn read_private_token(path: &Path) -> Result<String, TokenFileError> {
    read_private(path).map(|(token, _)| token)
}

/// A token file a server keeps using: checked and read at start ([`TokenFile::open`]), re-read
/// when it changes ([`TokenFile::current`]).
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    /// The last version read. Never shown (`Debug` of the token is redacted below).
    cached: Mutex<Cached>,
}

struct Cached {
    stamp: Option<Stamp>,
    token: String,
}

/// Never shows the token.
impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("stamp", &self.stamp)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl TokenFile {
    /// Checks and reads the file now: a server refuses to start on an unusable one.
    pub fn open(path: &Path) -> Result<TokenFile, TokenFileError> {
        let (token, stamp) = read_private(path)?;
        Ok(TokenFile {
            path: path.to_owned(),
            cached: Mutex::new(Cached {
                stamp: Some(stamp),
                token,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The token now: the cached one while the file is unchanged, else the file read again
    /// (and checked again). An error means the file is unusable now; it is retried on the next
    /// call.
    pub fn current(&self) -> Result<String, TokenFileError> {
        let now = std::fs::metadata(&self.path).map_err(|e| TokenFileError::Unreadable {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if cached.stamp == Some(Stamp::of(&now)) {
            return Ok(cached.token.clone());
        }
        match read_private(&self.path) {
            Ok((token, stamp)) => {
                *cached = Cached {
                    stamp: Some(stamp),
                    token: token.clone(),
                };
                Ok(token)
            }
            Err(e) => {
                // Forget the old token: a file made readable by others must not keep working.
                *cached = Cached {
                    stamp: None,
                    token: String::new(),
                };
                Err(e)
            }
        }
    }
}

/// Where a server's token comes from: fixed (an environment variable, a test) or a file that
/// may be rotated.
#[derive(Debug)]
pub enum TokenSource {
    Fixed(Fixed),
    File(TokenFile),
}

/// A token that never changes (redacted in `Debug`).
pub struct Fixed(String);

impl std::fmt::Debug for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fixed(<redacted>)")
    }
}

impl TokenSource {
    /// A fixed token (normalised: trimmed; empty is none).
    pub fn fixed(token: &str) -> Option<TokenSource> {
        normalize(Some(token.to_owned())).map(|t| TokenSource::Fixed(Fixed(t)))
    }

    /// `--token-file FILE` when given (checked and read now), else the environment variable
    /// `var` (unset or blank: no token).
    pub fn from_file_or_env(
        file: Option<&Path>,
        var: &str,
    ) -> Result<Option<TokenSource>, TokenFileError> {
        match file {
            Some(f) => TokenFile::open(f).map(|t| Some(TokenSource::File(t))),
            None => Ok(std::env::var(var).ok().and_then(|t| TokenSource::fixed(&t))),
        }
    }

    /// The token to compare with now.
    pub fn current(&self) -> Result<String, TokenFileError> {
        match self {
            TokenSource::Fixed(Fixed(t)) => Ok(t.clone()),
            TokenSource::File(f) => f.current(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "slowpoke-api-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }
    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn a_file_others_can_read_or_write_is_refused_naming_the_real_file() {
        let d = dir("exposed");
        let f = d.0.join("token");
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            write(&f, "s3cret\n", mode);
            let e = TokenFile::open(&f).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{mode:04o}")) && e.contains("chmod 600"),
                "{mode:o}: {e}"
            );
        }
        for mode in [0o600, 0o700, 0o611, 0o400] {
            write(&f, "s3cret\n", mode);
            assert_eq!(
                TokenFile::open(&f).expect("private").current().as_deref(),
                Ok("s3cret"),
                "{mode:o}"
            );
        }
        // A Kubernetes Secret volume: token -> ..data/token -> ..2026_01_01/token.
        let real_dir = d.0.join("..2026_01_01");
        std::fs::create_dir_all(&real_dir).expect("dir");
        write(&real_dir.join("token"), "k8s\n", 0o644);
        symlink("..2026_01_01", d.0.join("..data")).expect("symlink");
        symlink("..data/token", d.0.join("link")).expect("symlink");
        let e = TokenFile::open(&d.0.join("link")).unwrap_err().to_string();
        assert!(e.contains("..2026_01_01/token"), "names the real file: {e}");
        std::fs::set_permissions(
            real_dir.join("token"),
            std::fs::Permissions::from_mode(0o400),
        )
        .expect("chmod");
        let t = TokenFile::open(&d.0.join("link")).expect("0400 behind symlinks");
        assert_eq!(t.current().as_deref(), Ok("k8s"));
    }

    #[test]
    fn a_token_no_header_can_carry_is_refused_naming_the_character() {
        let d = dir("unsendable");
        let f = d.0.join("token");
        for bad in ["p\u{e4}ss", "two words", "tab\there"] {
            write(&f, &format!("{bad}\n"), 0o600);
            let e = TokenFile::open(&f).unwrap_err();
            assert!(
                matches!(e, TokenFileError::Unsendable { .. }),
                "{bad:?}: {e}"
            );
            assert!(e.to_string().contains("visible ASCII"), "{e}");
        }
        write(&f, "  ok-Token_123~!\n", 0o600);
        let t = TokenFile::open(&f).expect("visible ASCII, trimmed");
        assert_eq!(t.current().as_deref(), Ok("ok-Token_123~!"));
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_forgets_the_token() {
        let d = dir("rotate");
        let f = d.0.join("token");
        write(&f, "one\n", 0o600);
        let t = TokenFile::open(&f).expect("open");
        assert_eq!(t.current().as_deref(), Ok("one"));
        // Replaced by rename (how editors and the kubelet do it): new inode.
        let tmp = d.0.join("token.new");
        write(&tmp, "two\n", 0o600);
        std::fs::rename(&tmp, &f).expect("rename");
        assert_eq!(t.current().as_deref(), Ok("two"));
        // Made readable by others: refused, and the old token is not kept.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(t.current(), Err(TokenFileError::Exposed { .. })));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(t.current().as_deref(), Ok("two"));
        // Edited in place to a longer token (size changes even within one mtime tick).
        std::fs::write(&f, "three-and-more\n").expect("write");
        assert_eq!(t.current().as_deref(), Ok("three-and-more"));
        std::fs::remove_file(&f).expect("rm");
        assert!(matches!(
            t.current(),
            Err(TokenFileError::Unreadable { .. })
        ));
        assert!(!format!("{t:?}").contains("three"), "{t:?}");
    }

    #[test]
    fn sources() {
        assert!(TokenSource::fixed(" \n").is_none());
        let s = TokenSource::fixed(" abc\n").expect("token");
        assert_eq!(s.current().as_deref(), Ok("abc"));
        assert!(!format!("{s:?}").contains("abc"));
        let none =
            TokenSource::from_file_or_env(None, "SLOWPOKE_API_TEST_UNSET_VAR_X").expect("no file");
        assert!(none.is_none());
    }
}
