//! isopace deployment: a directory of JSON descriptor files becomes running components,
//! hot-(re)deployed as the files change.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod deployer;
mod descriptor;
mod error;
mod migrate;
mod preflight;
mod registry;
mod scan;
mod subst;
mod suggest;

pub use deployer::{
    DEFAULT_DEBOUNCE, DEFAULT_SCAN_INTERVAL, Deployer, DeployerBuilder, DeployerHandle,
    WRITE_SETTLE,
};
pub use descriptor::{Descriptor, MAX_DESCRIPTOR_BYTES};
pub use error::{DescriptorError, Error, ErrorKind, Position};
pub use migrate::{Deprecation, RestartField};
pub use preflight::{Finding, PreflightContext, Severity, Stage};
pub use registry::{Registry, TypeInfo};
pub use scan::{
    FileState, FileStatus, ScanReport, ValidateOptions, Validation, validate_dir, validate_dir_with,
};
