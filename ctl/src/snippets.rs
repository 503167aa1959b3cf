//! What an operator pastes into a VM definition for one vGPU: the QEMU `-device` JSON (QEMU 11
//! `vfio-user-pci` wants the JSON form) and the libvirt domain XML (command-line passthrough:
//! libvirt has no vfio-user device type yet), plus the vdev unit that serves the socket.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Snippets {
    pub socket: String,
    pub vdev_unit: String,
    pub qemu_device: String,
    pub libvirt_xml: String,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Snippets for vGPU `vgpu` whose vdev listens in `socket_dir`.
pub fn for_vgpu(vgpu: &str, socket_dir: &str) -> Snippets {
    let socket = format!("{}/{vgpu}.sock", socket_dir.trim_end_matches('/'));
    let device = serde_json::json!({
        "driver": "vfio-user-pci",
        "id": format!("netgpu-{vgpu}"),
        "socket": {"type": "unix", "path": socket},
    });
    let qemu_device = device.to_string();
    let libvirt_xml = format!(
        "<!-- in <domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>; guest RAM must be shared memfd -->\n\
<memoryBacking>\n  <source type='memfd'/>\n  <access mode='shared'/>\n</memoryBacking>\n\
<qemu:commandline>\n  <qemu:arg value='-device'/>\n  <qemu:arg value='{}'/>\n</qemu:commandline>\n",
        xml_escape(&qemu_device)
    );
    Snippets {
        socket,
        vdev_unit: format!("netgpu-vdev@{vgpu}.service"),
        qemu_device,
        libvirt_xml,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_json_is_what_qemu_11_accepts_and_the_xml_escapes_it() {
        let s = for_vgpu("vm1", "/run/netgpu/");
        assert_eq!(s.socket, "/run/netgpu/vm1.sock");
        let v: serde_json::Value = serde_json::from_str(&s.qemu_device).unwrap();
        assert_eq!(v["driver"], "vfio-user-pci");
        assert_eq!(v["socket"]["type"], "unix");
        assert_eq!(v["socket"]["path"], "/run/netgpu/vm1.sock");
        assert!(s
            .libvirt_xml
            .contains("&quot;driver&quot;:&quot;vfio-user-pci&quot;"));
        assert!(!s.libvirt_xml.contains("'{\""));
        assert_eq!(s.vdev_unit, "netgpu-vdev@vm1.service");
    }
}
