//! The guest kernel module's C header (`guest-tools/kmod/netgpu_abi.h`) must say exactly what
//! `abi.rs` says: this test compiles a C program that prints every constant, struct size and
//! field offset of the header, runs it, and compares each value with the Rust definition.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command as Process;

use netgpu_proto::abi::{self, op, queue as q, reg, Command, Completion, SgEntry};

/// Compiles and runs abi-dump.c once per test process.
fn c_values() -> &'static HashMap<String, u64> {
    static VALUES: std::sync::OnceLock<HashMap<String, u64>> = std::sync::OnceLock::new();
    VALUES.get_or_init(dump)
}

fn dump() -> HashMap<String, u64> {
    let kmod = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest-tools/kmod");
    let out = std::env::temp_dir().join(format!("netgpu-abi-dump-{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Process::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(kmod.join("tests/abi-dump.c"))
        .status()
        .expect("a C compiler (cc) is needed for the ABI check");
    assert!(status.success(), "compiling abi-dump.c failed");
    let output = Process::new(&out).output().unwrap();
    let _ = std::fs::remove_file(&out);
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn c_header_matches_the_rust_abi() {
    let c = c_values();
    let rust: Vec<(&str, u64)> = vec![
        ("NETGPU_VENDOR_ID", abi::DEFAULT_VENDOR_ID.into()),
        ("NETGPU_DEVICE_ID", abi::DEFAULT_DEVICE_ID.into()),
        ("NETGPU_PCI_CLASS", abi::PCI_CLASS_CODE.into()),
        ("NETGPU_REGS_BAR", abi::REGS_BAR.into()),
        ("NETGPU_REGS_BAR_SIZE", abi::REGS_BAR_SIZE),
        ("NETGPU_DOORBELL_BAR", abi::DOORBELL_BAR.into()),
        ("NETGPU_MSIX_BAR", abi::MSIX_BAR.into()),
        ("NETGPU_MAX_QUEUES", abi::MAX_QUEUES.into()),
        ("NETGPU_MSIX_VECTORS", abi::MSIX_VECTORS.into()),
        ("NETGPU_NO_VECTOR", abi::NO_VECTOR.into()),
        ("NETGPU_MAGIC", abi::MAGIC.into()),
        ("NETGPU_ABI_VERSION_MAJOR", abi::ABI_VERSION_MAJOR.into()),
        ("NETGPU_ABI_VERSION_MINOR", abi::ABI_VERSION_MINOR.into()),
        ("NETGPU_REG_MAGIC", reg::MAGIC),
        ("NETGPU_REG_VERSION", reg::VERSION),
        ("NETGPU_REG_DEVICE_FEATURES", reg::DEVICE_FEATURES),
        ("NETGPU_REG_DRIVER_FEATURES", reg::DRIVER_FEATURES),
        ("NETGPU_REG_STATUS", reg::STATUS),
        ("NETGPU_REG_FATAL_REASON", reg::FATAL_REASON),
        ("NETGPU_REG_RESET", reg::RESET),
        ("NETGPU_REG_INTR_STATUS", reg::INTR_STATUS),
        ("NETGPU_REG_MAX_QUEUES", reg::MAX_QUEUES),
        ("NETGPU_REG_MAX_QUEUE_SIZE", reg::MAX_QUEUE_SIZE),
        ("NETGPU_REG_MAX_SG_ENTRIES", reg::MAX_SG_ENTRIES),
        ("NETGPU_REG_MAX_TRANSFER", reg::MAX_TRANSFER),
        ("NETGPU_REG_EVENT_VECTOR", reg::EVENT_VECTOR),
        ("NETGPU_REG_GPU_TOTAL_MEM", reg::GPU_TOTAL_MEM),
        (
            "NETGPU_REG_GPU_COMPUTE_CAPABILITY",
            reg::GPU_COMPUTE_CAPABILITY,
        ),
        ("NETGPU_REG_GPU_SM_COUNT", reg::GPU_SM_COUNT),
        ("NETGPU_REG_GPU_DRIVER_VERSION", reg::GPU_DRIVER_VERSION),
        ("NETGPU_REG_GPU_EXECUTOR", reg::GPU_EXECUTOR),
        ("NETGPU_REG_MEMORY_QUOTA", reg::MEMORY_QUOTA),
        ("NETGPU_REG_GPU_UUID", reg::GPU_UUID),
        ("NETGPU_REG_GPU_NAME", reg::GPU_NAME),
        ("NETGPU_GPU_NAME_LEN", reg::GPU_NAME_LEN),
        ("NETGPU_REG_QUEUE_BASE", reg::QUEUE_REGS_BASE),
        ("NETGPU_REG_QUEUE_STRIDE", reg::QUEUE_REGS_STRIDE),
        ("NETGPU_REG_DOORBELL_BASE", reg::DOORBELL_BASE),
        ("NETGPU_REG_DOORBELL_STRIDE", reg::DOORBELL_STRIDE),
        ("NETGPU_QREG_SQ_BASE", q::SQ_BASE),
        ("NETGPU_QREG_CQ_BASE", q::CQ_BASE),
        ("NETGPU_QREG_SIZE", q::SIZE),
        ("NETGPU_QREG_MSIX_VECTOR", q::MSIX_VECTOR),
        ("NETGPU_QREG_ENABLE", q::ENABLE),
        ("NETGPU_QREG_STATUS", q::STATUS),
        ("NETGPU_QREG_ERROR", q::ERROR),
        ("NETGPU_QREG_COALESCE_USECS", q::COALESCE_USECS),
        ("NETGPU_QREG_COALESCE_COUNT", q::COALESCE_COUNT),
        ("NETGPU_QREG_SQ_HEAD", q::SQ_HEAD),
        ("NETGPU_QREG_CQ_TAIL", q::CQ_TAIL),
        ("NETGPU_QSTATUS_ENABLED", abi::QSTATUS_ENABLED.into()),
        ("NETGPU_QSTATUS_ERROR", abi::QSTATUS_ERROR.into()),
        ("NETGPU_STATUS_READY", abi::STATUS_READY.into()),
        ("NETGPU_STATUS_FATAL", abi::STATUS_FATAL.into()),
        ("NETGPU_STATUS_RESETTING", abi::STATUS_RESETTING.into()),
        ("NETGPU_STATUS_CONNECTING", abi::STATUS_CONNECTING.into()),
        ("NETGPU_RESET_VALUE", abi::RESET_VALUE.into()),
        ("NETGPU_FEATURE_FAST_DOORBELLS", abi::FEATURE_FAST_DOORBELLS),
        ("NETGPU_FEATURE_SG_INDIRECT", abi::FEATURE_SG_INDIRECT),
        ("NETGPU_FEATURE_SG_CHAIN", abi::FEATURE_SG_CHAIN),
        (
            "NETGPU_FEATURE_INTR_COALESCING",
            abi::FEATURE_INTR_COALESCING,
        ),
        ("NETGPU_FEATURE_ASYNC", abi::FEATURE_ASYNC),
        ("NETGPU_FEATURE_WIRE_REQUEST", abi::FEATURE_WIRE_REQUEST),
        ("NETGPU_FEATURE_OUT_OF_ORDER", abi::FEATURE_OUT_OF_ORDER),
        ("NETGPU_QERR_BUSY", abi::QERR_BUSY.into()),
        ("NETGPU_INTR_DEVICE_EVENT", abi::INTR_DEVICE_EVENT.into()),
        (
            "NETGPU_INTR_LAST_QUEUE_BIT",
            abi::INTR_LAST_QUEUE_BIT.into(),
        ),
        ("NETGPU_MIN_QUEUE_SIZE", abi::MIN_QUEUE_SIZE.into()),
        ("NETGPU_MAX_QUEUE_SIZE", abi::MAX_QUEUE_SIZE.into()),
        ("NETGPU_RING_ALIGN", abi::RING_ALIGN),
        ("NETGPU_MAX_SG_ENTRIES", abi::MAX_SG_ENTRIES.into()),
        ("NETGPU_MAX_TRANSFER", abi::MAX_TRANSFER.into()),
        ("NETGPU_MAX_NAME_LEN", abi::MAX_NAME_LEN.into()),
        ("NETGPU_MAX_PARAM_BUFFER", abi::MAX_PARAM_BUFFER.into()),
        ("NETGPU_INLINE_SG_ENTRIES", abi::INLINE_SG_ENTRIES as u64),
        ("NETGPU_SG_FLAG_CHAIN", abi::SG_FLAG_CHAIN.into()),
        (
            "NETGPU_SG_FLAG_DEVICE_WRITE",
            abi::SG_FLAG_DEVICE_WRITE.into(),
        ),
        (
            "NETGPU_CMD_FLAG_SG_INDIRECT",
            abi::CMD_FLAG_SG_INDIRECT.into(),
        ),
        ("NETGPU_CMD_FLAG_ASYNC", abi::CMD_FLAG_ASYNC.into()),
        ("NETGPU_CQE_FLAG_PHASE", abi::CQE_FLAG_PHASE.into()),
        (
            "NETGPU_CQE_FLAG_CONSOLE_PENDING",
            abi::CQE_FLAG_CONSOLE_PENDING.into(),
        ),
        ("NETGPU_OP_NOP", op::NOP.into()),
        ("NETGPU_OP_DEVICE_QUERY", op::DEVICE_QUERY.into()),
        ("NETGPU_OP_MEM_GET_INFO", op::MEM_GET_INFO.into()),
        ("NETGPU_OP_CTX_CREATE", op::CTX_CREATE.into()),
        ("NETGPU_OP_CTX_DESTROY", op::CTX_DESTROY.into()),
        ("NETGPU_OP_CTX_SYNCHRONIZE", op::CTX_SYNCHRONIZE.into()),
        ("NETGPU_OP_MEM_ALLOC", op::MEM_ALLOC.into()),
        ("NETGPU_OP_MEM_FREE", op::MEM_FREE.into()),
        ("NETGPU_OP_MEMCPY_HTOD", op::MEMCPY_HTOD.into()),
        ("NETGPU_OP_MEMCPY_DTOH", op::MEMCPY_DTOH.into()),
        ("NETGPU_OP_MEMCPY_DTOD", op::MEMCPY_DTOD.into()),
        ("NETGPU_OP_MEMSET", op::MEMSET.into()),
        ("NETGPU_OP_MODULE_LOAD", op::MODULE_LOAD.into()),
        ("NETGPU_OP_MODULE_UNLOAD", op::MODULE_UNLOAD.into()),
        (
            "NETGPU_OP_MODULE_GET_FUNCTION",
            op::MODULE_GET_FUNCTION.into(),
        ),
        ("NETGPU_OP_MODULE_GET_GLOBAL", op::MODULE_GET_GLOBAL.into()),
        ("NETGPU_OP_LAUNCH_KERNEL", op::LAUNCH_KERNEL.into()),
        ("NETGPU_OP_STREAM_CREATE", op::STREAM_CREATE.into()),
        ("NETGPU_OP_STREAM_DESTROY", op::STREAM_DESTROY.into()),
        (
            "NETGPU_OP_STREAM_SYNCHRONIZE",
            op::STREAM_SYNCHRONIZE.into(),
        ),
        ("NETGPU_OP_STREAM_QUERY", op::STREAM_QUERY.into()),
        ("NETGPU_OP_EVENT_CREATE", op::EVENT_CREATE.into()),
        ("NETGPU_OP_EVENT_RECORD", op::EVENT_RECORD.into()),
        ("NETGPU_OP_EVENT_SYNCHRONIZE", op::EVENT_SYNCHRONIZE.into()),
        ("NETGPU_OP_EVENT_QUERY", op::EVENT_QUERY.into()),
        (
            "NETGPU_OP_EVENT_ELAPSED_TIME",
            op::EVENT_ELAPSED_TIME.into(),
        ),
        ("NETGPU_OP_EVENT_DESTROY", op::EVENT_DESTROY.into()),
        ("NETGPU_OP_WIRE_REQUEST", op::WIRE_REQUEST.into()),
        (
            "NETGPU_DEVICE_INFO_SIZE",
            abi::DeviceInfoRecord::SIZE as u64,
        ),
        ("NETGPU_PARAM_RECORD_SIZE", abi::ParamRecord::SIZE as u64),
        ("sizeof_netgpu_sg_entry", size_of::<SgEntry>() as u64),
        (
            "offsetof_netgpu_sg_entry_addr",
            offset_of!(SgEntry, addr) as u64,
        ),
        (
            "offsetof_netgpu_sg_entry_len",
            offset_of!(SgEntry, len) as u64,
        ),
        (
            "offsetof_netgpu_sg_entry_flags",
            offset_of!(SgEntry, flags) as u64,
        ),
        ("sizeof_netgpu_command", size_of::<Command>() as u64),
        (
            "offsetof_netgpu_command_opcode",
            offset_of!(Command, opcode) as u64,
        ),
        (
            "offsetof_netgpu_command_flags",
            offset_of!(Command, flags) as u64,
        ),
        (
            "offsetof_netgpu_command_cid",
            offset_of!(Command, cid) as u64,
        ),
        (
            "offsetof_netgpu_command_args",
            offset_of!(Command, args) as u64,
        ),
        (
            "offsetof_netgpu_command_sg_count",
            offset_of!(Command, sg_count) as u64,
        ),
        (
            "offsetof_netgpu_command_reserved",
            offset_of!(Command, reserved) as u64,
        ),
        ("offsetof_netgpu_command_sg", offset_of!(Command, sg) as u64),
        ("sizeof_netgpu_completion", size_of::<Completion>() as u64),
        (
            "offsetof_netgpu_completion_cid",
            offset_of!(Completion, cid) as u64,
        ),
        (
            "offsetof_netgpu_completion_result",
            offset_of!(Completion, result) as u64,
        ),
        (
            "offsetof_netgpu_completion_value0",
            offset_of!(Completion, value0) as u64,
        ),
        (
            "offsetof_netgpu_completion_value1",
            offset_of!(Completion, value1) as u64,
        ),
        (
            "offsetof_netgpu_completion_sq_head",
            offset_of!(Completion, sq_head) as u64,
        ),
        (
            "offsetof_netgpu_completion_flags",
            offset_of!(Completion, flags) as u64,
        ),
        (
            "offsetof_netgpu_completion_reserved",
            offset_of!(Completion, reserved) as u64,
        ),
        (
            "sizeof_netgpu_ioc_cmd",
            (Command::SIZE + Completion::SIZE) as u64,
        ),
        ("sizeof_netgpu_ioc_submit", abi::uapi::SUBMIT_SIZE as u64),
        ("sizeof_netgpu_ioc_info", abi::uapi::INFO_SIZE as u64),
        ("NETGPU_IOC_INFO", abi::uapi::IOC_INFO.into()),
        ("NETGPU_IOC_SUBMIT", abi::uapi::IOC_SUBMIT.into()),
        ("NETGPU_MAX_BATCH", abi::uapi::MAX_BATCH.into()),
        ("NETGPU_UAPI_VERSION", abi::uapi::UAPI_VERSION.into()),
    ];
    assert_eq!(abi::uapi::CMD_SIZE, Command::SIZE + Completion::SIZE);
    let mut mismatches = Vec::new();
    for (name, want) in &rust {
        match c.get(*name) {
            Some(got) if got == want => {}
            Some(got) => mismatches.push(format!("{name}: C {got:#x}, Rust {want:#x}")),
            None => mismatches.push(format!("{name}: missing from abi-dump.c")),
        }
    }
    assert!(
        mismatches.is_empty(),
        "C header and Rust ABI disagree:\n{}",
        mismatches.join("\n")
    );
    assert_eq!(
        c.len(),
        rust.len(),
        "abi-dump.c prints values this test does not check"
    );
}

#[test]
fn every_rust_opcode_is_known_to_the_c_header() {
    let c = c_values();
    let c_ops: Vec<u64> = c
        .iter()
        .filter(|(k, _)| k.starts_with("NETGPU_OP_"))
        .map(|(_, v)| *v)
        .collect();
    for o in op::ALL {
        assert!(
            c_ops.contains(&u64::from(*o)),
            "opcode {o:#x} missing from netgpu_abi.h"
        );
    }
}
