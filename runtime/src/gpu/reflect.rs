//! The bind group layout of one entry point, read from its WGSL. Pipelines get explicit layouts (rather
//! than wgpu's derived ones) so the uniform `params` binding can take a dynamic offset: one bind group
//! then serves every launch of a kernel on the same buffers, whatever slot its parameters landed in.

use naga::valid::{Capabilities, ValidationFlags, Validator};

use crate::{Error, Result};

/// Storage bindings (binding, read-only) of group 0 that `entry` uses, in binding order.
pub(crate) fn storage_bindings(file: &str, source: &str, entry: &str) -> Result<Vec<(u32, bool)>> {
    let shader_error = |msg: String| Error::Shader {
        kernel: file.to_string(),
        msg: format!("entry `{entry}`: {msg}"),
    };
    let module =
        naga::front::wgsl::parse_str(source).map_err(|e| shader_error(e.emit_to_string(source)))?;
    let index = module
        .entry_points
        .iter()
        .position(|e| e.name == entry)
        .ok_or_else(|| shader_error("no such entry point".into()))?;
    // Only the use analysis is needed; wgpu validates the module itself when it compiles it.
    let info = Validator::new(ValidationFlags::empty(), Capabilities::all())
        .validate(&module)
        .map_err(|e| shader_error(e.emit_to_string(source)))?;
    let uses = info.get_entry_point(index);
    let mut bindings = Vec::new();
    for (handle, var) in module.global_variables.iter() {
        let Some(rb) = &var.binding else { continue };
        if uses[handle].is_empty() {
            continue;
        }
        match var.space {
            naga::AddressSpace::Storage { access } if rb.group == 0 && rb.binding != 0 => {
                bindings.push((rb.binding, !access.contains(naga::StorageAccess::STORE)));
            }
            naga::AddressSpace::Uniform if rb.group == 0 && rb.binding == 0 => {}
            _ => {
                return Err(shader_error(format!(
                    "binding @group({}) @binding({}) does not fit kiln's layout (uniform params at \
                     group 0 binding 0, storage buffers at other group-0 bindings)",
                    rb.group, rb.binding
                )))
            }
        }
    }
    bindings.sort_unstable();
    Ok(bindings)
}

/// Binding 0: the uniform parameters at a dynamic offset; then the storage buffers.
pub(crate) fn bind_group_layout(
    device: &wgpu::Device,
    label: &str,
    storage: &[(u32, bool)],
) -> wgpu::BindGroupLayout {
    let buffer = |binding, ty, has_dynamic_offset| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset,
            min_binding_size: None,
        },
        count: None,
    };
    let mut entries = vec![buffer(0, wgpu::BufferBindingType::Uniform, true)];
    for &(binding, read_only) in storage {
        entries.push(buffer(
            binding,
            wgpu::BufferBindingType::Storage { read_only },
            false,
        ));
    }
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "
struct P { n: u32 }
@group(0) @binding(0) var<uniform> params: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> unused_by_one: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1) fn one(@builtin(global_invocation_id) id: vec3<u32>) {
    out[id.x] = a[id.x] * f32(params.n);
}
@compute @workgroup_size(1) fn two(@builtin(global_invocation_id) id: vec3<u32>) {
    out[id.x] = a[id.x] + unused_by_one[id.x];
}
";

    #[test]
    fn an_entry_point_gets_only_the_storage_bindings_it_uses() {
        assert_eq!(
            storage_bindings("t.wgsl", SOURCE, "one").unwrap(),
            [(1, true), (3, false)]
        );
        assert_eq!(
            storage_bindings("t.wgsl", SOURCE, "two").unwrap(),
            [(1, true), (2, true), (3, false)]
        );
    }

    #[test]
    fn a_missing_entry_or_foreign_binding_names_the_file() {
        let err = storage_bindings("t.wgsl", SOURCE, "three")
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.wgsl") && err.contains("three"), "{err}");
        let other = "@group(1) @binding(0) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(1) fn main() { x[0] = 1.0; }";
        let err = storage_bindings("g.wgsl", other, "main")
            .unwrap_err()
            .to_string();
        assert!(err.contains("g.wgsl") && err.contains("@group(1)"), "{err}");
    }
}
