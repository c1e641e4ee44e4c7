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

/// Makes CPU arithmetic flush denormal floats (below 1.2e-38) to zero, in this thread and
/// every thread started after it, as TensorFlow (so Keras) does on the CPU and PyTorch does
/// after `torch.set_flush_denormal(True)`. x86 computes with denormals many times slower,
/// and training makes them: Adam's first moment of a dead ReLU unit decays by beta1 each
/// step, through the denormal range (a [128, 128] MLP on friedman1 at lr 0.01 trained in
/// 0.71 s with them, 0.46 s without). Called first thing, before libtorch starts threads.
pub fn flush_denormals() {
    crate::shim::set_flush_denormal(true);
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

/// Whether libtorch's CUDA backend is in this process (crate::cuda), and its CUDA runtime.
fn cuda_backend() -> String {
    match (crate::cuda::backend_state(), crate::shim::cuda_backend_runtime()) {
        (Ok(()), Some(runtime)) => format!("loaded (CUDA runtime {runtime})"),
        (Ok(()), None) => "loaded, but libtorch registered no CUDA backend".into(),
        (Err(why), _) => format!("not loaded ({why})"),
    }
}

/// What `torchfit info` prints.
pub fn info() -> String {
    let mut lines = vec![
        format!("torchfit {}", env!("CARGO_PKG_VERSION")),
        format!("libtorch {}", libtorch_version()),
        format!("cuda backend: {}", cuda_backend()),
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
    fn denormals_are_flushed_in_the_thread_that_asks_and_the_threads_it_starts() {
        // A thread of its own: the mode stays with the threads that have it.
        std::thread::spawn(|| {
            let tiny = || tch::Tensor::from_slice(&[1e-39f32]) * 1.0;
            assert_eq!(tiny().double_value(&[0]), 1e-39f32 as f64, "a denormal survives by default");
            if !crate::shim::set_flush_denormal(true) {
                return; // a CPU without the mode
            }
            assert_eq!(tiny().double_value(&[0]), 0.0);
            std::thread::spawn(move || assert_eq!(tiny().double_value(&[0]), 0.0)).join().unwrap();
        })
        .join()
        .unwrap();
    }

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
