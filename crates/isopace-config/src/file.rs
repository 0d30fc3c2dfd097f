//! Reading a file that may not be what its name says: only a regular file is read, without
//! blocking, and only up to a size limit.

use std::{
    fmt, fs,
    io::{self, Read},
    path::Path,
};

/// Why [`read_regular_file`] read nothing.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The file could not be opened or read.
    Io(io::Error),
    /// The path names something other than a regular file: what it is, such as `a FIFO`.
    NotRegular(&'static str),
    /// The file is larger than the limit.
    TooLarge {
        /// Its size in bytes (at least the limit plus one when it grew while being read).
        len: u64,
        /// The limit.
        limit: u64,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(_) => f.write_str("cannot read"),
            ReadError::NotRegular(what) => write!(f, "not a regular file ({what})"),
            ReadError::TooLarge { len, limit } => {
                write!(f, "the file is {len} bytes; the limit is {limit} bytes")
            }
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads the whole of `path` when it is a regular file of at most `limit` bytes.
///
/// Opening a FIFO for reading waits for a writer, forever if none comes, and a device may
/// never end; either would hold up whoever reads. So the type is checked after following
/// links, the file is opened without blocking, and the type and size are checked again on
/// what was opened, in case the path was swapped in between. The read stops one byte past
/// the limit, in case the file grows meanwhile. Blocking I/O: run it off async threads.
///
/// ```
/// use isopace_config::{ReadError, read_regular_file};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("app.json");
/// std::fs::write(&path, "{}")?;
/// assert_eq!(read_regular_file(&path, 1024).unwrap(), b"{}");
/// assert!(matches!(read_regular_file(dir.path(), 1024), Err(ReadError::NotRegular("a directory"))));
/// assert!(matches!(read_regular_file(&path, 1), Err(ReadError::TooLarge { len: 2, limit: 1 })));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    check_regular(&fs::metadata(path).map_err(ReadError::Io)?)?;
    let mut file = open_nonblocking(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    check_regular(&meta)?;
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            len: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            len: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// Opens `path` for reading without waiting: on a FIFO, `open` itself would wait for a
/// writer.
fn open_nonblocking(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

fn check_regular(meta: &fs::Metadata) -> Result<(), ReadError> {
    if meta.is_file() {
        Ok(())
    } else {
        Err(ReadError::NotRegular(file_type(&meta.file_type())))
    }
}

/// What a file that is not a regular file is, for messages.
fn file_type(t: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}
