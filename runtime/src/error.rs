//! One error type for the runtime and the kernels. Every message names the op, tensor or file involved
//! and the shapes, so a user can act on it without a debugger.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Shapes that do not fit together, or a zero-size tensor where data is needed.
    #[error("{op}: {msg}")]
    Shape { op: String, msg: String },

    /// A dtype (or combination of dtypes) the op does not implement.
    #[error("{op}: unsupported dtype {msg}")]
    DType { op: String, msg: String },

    /// A request over what the device allows (binding size, buffer size, workgroup count).
    #[error("{op}: {msg}")]
    Limit { op: String, msg: String },

    /// Tensors on different devices, an unknown device name, or no usable adapter.
    #[error("device: {0}")]
    Device(String),

    /// A WGSL kernel that failed to parse, validate or compile.
    #[error("kernel {kernel}: {msg}")]
    Shader { kernel: String, msg: String },

    /// wgpu reported an error while running commands or mapping memory.
    #[error("gpu: {0}")]
    Gpu(String),

    /// A weight file that cannot be opened or parsed.
    #[error("{}: {msg}", path.display())]
    Load { path: PathBuf, msg: String },

    /// A tensor name not present in a weight file.
    #[error("{}: no tensor named `{name}`{}", path.display(), close_names_hint(close))]
    MissingTensor {
        path: PathBuf,
        name: String,
        close: Vec<String>,
    },
}

fn close_names_hint(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!("; close names: {}", close.join(", "))
    }
}

impl Error {
    pub fn shape(op: &str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op: op.to_string(),
            msg: msg.into(),
        }
    }
    pub fn dtype(op: &str, msg: impl Into<String>) -> Self {
        Error::DType {
            op: op.to_string(),
            msg: msg.into(),
        }
    }
    pub fn limit(op: &str, msg: impl Into<String>) -> Self {
        Error::Limit {
            op: op.to_string(),
            msg: msg.into(),
        }
    }
    pub fn load(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Load {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
