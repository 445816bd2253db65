//! Discovery of wgpu adapters and what each supports, for `kiln devices` and device choice.

use std::sync::OnceLock;

use serde::Serialize;

/// One process-wide wgpu instance over every backend (Vulkan, Metal, DX12, GL).
pub fn instance() -> &'static wgpu::Instance {
    static INSTANCE: OnceLock<wgpu::Instance> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::all();
        wgpu::Instance::new(desc)
    })
}

/// Every adapter, in the order `gpu:N` indexes. The list is taken once per process so indices stay put.
pub fn adapters() -> &'static [wgpu::Adapter] {
    static ADAPTERS: OnceLock<Vec<wgpu::Adapter>> = OnceLock::new();
    ADAPTERS
        .get_or_init(|| pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all())))
}

#[derive(Clone, Debug, Serialize)]
pub struct AdapterReport {
    /// `gpu:N` for an adapter, `cpu` for the native backend.
    pub id: String,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub f16: bool,
    pub subgroups: bool,
    pub subgroup_size_min: u32,
    pub subgroup_size_max: u32,
    pub timestamp_queries: bool,
    pub cooperative_matrix: bool,
    pub max_buffer_size: u64,
    pub max_storage_binding_size: u64,
    pub max_workgroup_storage_size: u32,
    pub max_invocations_per_workgroup: u32,
    /// Whether `--device auto` would pick it: real hardware on a native API.
    pub auto_eligible: bool,
}

/// Hardware adapters rank above software ones and native APIs above GL; `None` means not eligible.
fn auto_rank(info: &wgpu::AdapterInfo) -> Option<u32> {
    let type_rank = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => return None,
    };
    let backend_rank = match info.backend {
        wgpu::Backend::Gl => 1,
        _ => 0,
    };
    Some(type_rank * 2 + backend_rank)
}

/// The index of the adapter `auto` should use, if any.
pub fn best_hardware_adapter() -> Option<usize> {
    adapters()
        .iter()
        .enumerate()
        .filter_map(|(i, a)| auto_rank(&a.get_info()).map(|rank| (rank, i)))
        .min()
        .map(|(_, i)| i)
}

pub fn report(index: usize, adapter: &wgpu::Adapter) -> AdapterReport {
    let info = adapter.get_info();
    let features = adapter.features();
    let limits = adapter.limits();
    AdapterReport {
        id: format!("gpu:{index}"),
        name: info.name.clone(),
        backend: format!("{:?}", info.backend).to_lowercase(),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
        f16: features.contains(wgpu::Features::SHADER_F16),
        subgroups: features.contains(wgpu::Features::SUBGROUP),
        subgroup_size_min: info.subgroup_min_size,
        subgroup_size_max: info.subgroup_max_size,
        timestamp_queries: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        cooperative_matrix: !adapter.cooperative_matrix_properties().is_empty(),
        max_buffer_size: limits.max_buffer_size,
        max_storage_binding_size: limits.max_storage_buffer_binding_size,
        max_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        auto_eligible: auto_rank(&info).is_some(),
    }
}

/// The native CPU backend described in the same terms.
pub fn cpu_report() -> AdapterReport {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    AdapterReport {
        id: "cpu".to_string(),
        name: format!("native CPU backend ({threads} threads)"),
        backend: "cpu".to_string(),
        device_type: "Cpu".to_string(),
        driver: "kiln".to_string(),
        driver_info: String::new(),
        f16: true,
        subgroups: false,
        subgroup_size_min: 0,
        subgroup_size_max: 0,
        timestamp_queries: false,
        cooperative_matrix: false,
        max_buffer_size: u64::MAX,
        max_storage_binding_size: u64::MAX,
        max_workgroup_storage_size: 0,
        max_invocations_per_workgroup: 0,
        auto_eligible: true,
    }
}

/// Every adapter followed by the CPU backend.
pub fn all_reports() -> Vec<AdapterReport> {
    let mut reports: Vec<_> = adapters()
        .iter()
        .enumerate()
        .map(|(i, a)| report(i, a))
        .collect();
    reports.push(cpu_report());
    reports
}
