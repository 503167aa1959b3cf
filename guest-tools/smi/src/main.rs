//! `netgpu-smi`: lists a guest's netgpu devices with the remote GPU's name, memory, executor,
//! backend link state and running contexts, from the kernel module's sysfs attributes
//! (`/sys/class/netgpu/netgpuN/`). With `NETGPU_BACKEND` set it asks that backend directly
//! (as `libcuda.so.1` would).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;

/// Shows the netgpu devices of this machine.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Show every attribute of each device.
    #[arg(short = 'q', long)]
    query: bool,
    /// Print JSON (for scripts).
    #[arg(long)]
    json: bool,
    /// sysfs class directory to read (for tests).
    #[arg(long, default_value = "/sys/class/netgpu", hide = true)]
    sysfs: PathBuf,
}

#[derive(Debug, Serialize, PartialEq)]
struct Device {
    name: String,
    gpu: String,
    executor: String,
    link: String,
    memory_total: u64,
    memory_quota: u64,
    compute_capability: String,
    multiprocessors: u32,
    remote_driver_version: u32,
    contexts: u32,
    pci_address: String,
    interrupts: String,
    abi_version: String,
}

fn attr(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn read_devices(class: &Path) -> std::io::Result<Vec<Device>> {
    let mut names: Vec<String> = match std::fs::read_dir(class) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("netgpu"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    names.sort_by_key(|n| {
        n.trim_start_matches("netgpu")
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    Ok(names
        .into_iter()
        .map(|n| {
            let d = class.join(&n);
            let pci = std::fs::read_link(d.join("device"))
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                .unwrap_or_default();
            Device {
                gpu: attr(&d, "gpu_name"),
                executor: attr(&d, "executor"),
                link: attr(&d, "link_state"),
                memory_total: attr(&d, "total_mem").parse().unwrap_or(0),
                memory_quota: attr(&d, "memory_quota").parse().unwrap_or(0),
                compute_capability: attr(&d, "compute_capability"),
                multiprocessors: attr(&d, "sm_count").parse().unwrap_or(0),
                remote_driver_version: attr(&d, "driver_version").parse().unwrap_or(0),
                contexts: attr(&d, "queues_in_use").parse().unwrap_or(0),
                interrupts: attr(&d, "irq_mode"),
                abi_version: attr(&d, "abi_version"),
                pci_address: pci,
                name: n,
            }
        })
        .collect())
}

/// The device as a backend describes it (`NETGPU_BACKEND` mode).
fn backend_device() -> Result<Device, String> {
    let t = cuda::transport::from_env().map_err(|e| format!("cannot reach the backend: {e}"))?;
    let d = t
        .device_query()
        .map_err(|e| format!("device query failed: {e}"))?;
    Ok(Device {
        name: t.describe(),
        gpu: d.name,
        executor: d.executor,
        link: "up".into(),
        memory_total: d.total_mem,
        memory_quota: d.total_mem,
        compute_capability: format!("{}.{}", d.cc_major, d.cc_minor),
        multiprocessors: d.multiprocessors,
        remote_driver_version: d.driver_version,
        contexts: 0,
        pci_address: String::new(),
        interrupts: String::new(),
        abi_version: String::new(),
    })
}

fn mib(b: u64) -> String {
    format!("{} MiB", b >> 20)
}

fn table(devs: &[Device]) -> String {
    let mut s = format!(
        "{:<9} {:<28} {:<8} {:<12} {:>12} {:>9}\n",
        "DEVICE", "REMOTE GPU", "EXEC", "LINK", "MEMORY", "CONTEXTS"
    );
    for d in devs {
        s.push_str(&format!(
            "{:<9} {:<28} {:<8} {:<12} {:>12} {:>9}\n",
            d.name,
            d.gpu,
            d.executor,
            d.link,
            mib(d.memory_total),
            d.contexts
        ));
    }
    s
}

fn detail(devs: &[Device]) -> String {
    let mut s = String::new();
    for d in devs {
        s.push_str(&format!(
            "{}\n    Remote GPU              : {}\n    Executor                : {}\n    Link state              : {}\n    Memory total            : {}\n    Memory quota            : {}\n    Compute capability      : {}\n    Multiprocessors         : {}\n    Remote driver version   : {}\n    Running contexts        : {}\n    PCI address             : {}\n    Interrupts              : {}\n    Device ABI              : {}\n",
            d.name, d.gpu, d.executor, d.link, mib(d.memory_total), mib(d.memory_quota), d.compute_capability, d.multiprocessors, d.remote_driver_version, d.contexts, d.pci_address, d.interrupts, d.abi_version
        ));
    }
    s
}

fn main() -> ExitCode {
    let args = Args::parse();
    let devs = if std::env::var_os("NETGPU_BACKEND").is_some() {
        match backend_device() {
            Ok(d) => vec![d],
            Err(e) => {
                eprintln!("netgpu-smi: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        match read_devices(&args.sysfs) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("netgpu-smi: cannot read {}: {e}", args.sysfs.display());
                return ExitCode::FAILURE;
            }
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&devs) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("netgpu-smi: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else if devs.is_empty() {
        eprintln!("netgpu-smi: no netgpu device found (is the netgpu module loaded? see docs/guest-install.md)");
        return ExitCode::FAILURE;
    } else if args.query {
        print!("{}", detail(&devs));
    } else {
        print!("{}", table(&devs));
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs() -> PathBuf {
        let root = std::env::temp_dir().join(format!("netgpu-smi-{}", std::process::id()));
        let d = root.join("netgpu0");
        std::fs::create_dir_all(&d).unwrap();
        for (k, v) in [
            ("gpu_name", "NVIDIA H100 80GB HBM3"),
            ("executor", "cuda"),
            ("link_state", "up"),
            ("total_mem", "85520809984"),
            ("memory_quota", "17179869184"),
            ("compute_capability", "9.0"),
            ("sm_count", "132"),
            ("driver_version", "13000"),
            ("queues_in_use", "2"),
            ("irq_mode", "msix 65"),
            ("abi_version", "1.0"),
        ] {
            std::fs::write(d.join(k), format!("{v}\n")).unwrap();
        }
        root
    }

    #[test]
    fn reads_every_attribute_and_formats_table_detail_and_json() {
        let root = fake_sysfs();
        let devs = read_devices(&root).unwrap();
        assert_eq!(devs.len(), 1);
        let d = &devs[0];
        assert_eq!(
            (
                d.gpu.as_str(),
                d.executor.as_str(),
                d.contexts,
                d.multiprocessors
            ),
            ("NVIDIA H100 80GB HBM3", "cuda", 2, 132)
        );
        let t = table(&devs);
        assert!(
            t.contains("netgpu0") && t.contains("81559 MiB") && t.contains("up"),
            "{t}"
        );
        let q = detail(&devs);
        assert!(
            q.contains("Compute capability      : 9.0")
                && q.contains("Memory quota            : 16384 MiB"),
            "{q}"
        );
        let j: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&devs).unwrap()).unwrap();
        assert_eq!(j[0]["remote_driver_version"], 13000);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn no_class_directory_means_no_devices() {
        assert!(read_devices(Path::new("/nonexistent/netgpu-class"))
            .unwrap()
            .is_empty());
    }
}
