//! halo's one configuration model: `halo.toml` loaded and validated into a typed [`Config`],
//! importers from the classic haproxy + keepalived stack, and renderers back to it.

pub mod defaults;
pub mod diag;
pub mod host_files;
pub mod import;
pub mod load;
pub mod model;
pub mod raw;
pub mod render;
pub(crate) mod validate;

pub use diag::{Diagnostic, Location, Severity};
pub use load::{Loaded, load_file, load_str};
pub use model::*;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any real configuration.
    #[error("{path} is larger than {limit} bytes; this is not a halo configuration")]
    TooLarge {
        /// The file.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// The file is not text.
    #[error("{path} is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 {
        /// The file.
        path: String,
        /// First bad byte.
        offset: usize,
    },
    /// The file was read but has errors; all of them, with the warnings, sorted by place.
    #[error("invalid configuration ({} errors)", .0.iter().filter(|d| d.is_error()).count())]
    Invalid(Vec<Diagnostic>),
}
