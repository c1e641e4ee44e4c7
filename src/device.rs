//! Where a run lives: the configured [`DeviceChoice`] checked against what libtorch actually
//! sees, plus the facts `torchfit info` reports.

use anyhow::{bail, Result};
use tch::{Cuda, Device};

use crate::config::DeviceChoice;

impl DeviceChoice {
    /// The libtorch device for this choice; asking for CUDA that is not there is an error
    /// that says what was found.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => Ok(Device::cuda_if_available()),
            DeviceChoice::Cuda(index) => {
                let count = Cuda::device_count() as usize;
                if count == 0 {
                    bail!(
                        "device cuda:{index} was asked for, but libtorch {} finds no CUDA device \
                         (CUDA available: {}); use device: cpu or auto",
                        libtorch_version(),
                        Cuda::is_available()
                    );
                }
                if index >= count {
                    bail!(
                        "device cuda:{index} was asked for, but only {count} CUDA device(s) exist (cuda:0..cuda:{})",
                        count - 1
                    );
                }
                Ok(Device::Cuda(index))
            }
        }
    }
}

/// The name torchfit writes for a device: `cpu` or `cuda:N`.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    }
}

/// The libtorch version this binary was built against (read from the install by build.rs).
pub fn libtorch_version() -> &'static str {
    env!("TORCHFIT_LIBTORCH_VERSION")
}

/// What `torchfit info` prints.
pub fn info() -> String {
    let mut lines = vec![
        format!("torchfit {}", env!("CARGO_PKG_VERSION")),
        format!("libtorch {}", libtorch_version()),
        format!("cuda available: {}", Cuda::is_available()),
    ];
    let count = Cuda::device_count().max(0) as usize;
    lines.push(format!("cuda devices: {count}"));
    for i in 0..count {
        let name = crate::shim::cuda_device_name(i).unwrap_or_else(|| "(name unavailable)".into());
        lines.push(format!("  cuda:{i} {name}"));
    }
    lines.push(format!("cudnn available: {}", Cuda::cudnn_is_available()));
    lines.push(format!("threads: {}", tch::get_num_threads()));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_cuda_device_is_an_error_naming_what_was_found() {
        let count = Cuda::device_count() as usize;
        let err = DeviceChoice::Cuda(count).resolve().unwrap_err().to_string();
        if count == 0 {
            assert!(err.contains("finds no CUDA device"), "{err}");
            assert_eq!(DeviceChoice::Auto.resolve().unwrap(), Device::Cpu);
        } else {
            assert!(err.contains(&format!("only {count} CUDA device(s)")), "{err}");
            assert_eq!(DeviceChoice::Auto.resolve().unwrap(), Device::Cuda(0));
        }
    }
}
