//! Errors of the forest crate: model files, training input and scoring input.

use std::path::PathBuf;

/// Everything that can go wrong when loading, training or scoring a forest.
#[derive(Debug, thiserror::Error)]
pub enum ForestError {
    /// The model file could not be read or written.
    #[error("model file {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The model file is not valid JSON of the expected shape (truncated, wrong types, ...).
    #[error("model file {}: not a txguard forest model: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// The model parsed but its content is inconsistent.
    #[error("invalid model{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Invalid {
        path: Option<PathBuf>,
        message: String,
    },
    /// Training parameters are out of range.
    #[error("invalid training parameter {param}: {message}")]
    Param {
        param: &'static str,
        message: String,
    },
    /// A setting (such as `TXGUARD_FOREST_KERNEL`) is not usable here.
    #[error("{0}")]
    Setting(String),
    /// Training or scoring data does not fit the model or is unusable.
    #[error("invalid data: {0}")]
    Data(String),
}

impl ForestError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ForestError::Invalid {
            path: None,
            message: message.into(),
        }
    }

    pub(crate) fn with_path(self, p: &std::path::Path) -> Self {
        match self {
            ForestError::Invalid { message, .. } => ForestError::Invalid {
                path: Some(p.to_path_buf()),
                message,
            },
            other => other,
        }
    }
}

pub type Result<T, E = ForestError> = std::result::Result<T, E>;
