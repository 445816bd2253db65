//! `kiln devices`: what each adapter offers, as a table or JSON.

use anyhow::Result;
use kiln_runtime::adapters::{all_reports, AdapterReport};
use kiln_runtime::memory::format_bytes;

pub fn print(json: bool) -> Result<()> {
    let reports = all_reports();
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    for r in &reports {
        print_one(r);
    }
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn print_one(r: &AdapterReport) {
    println!("{:<6} {}", r.id, r.name);
    println!(
        "       backend {}, type {}, driver {} {}",
        r.backend, r.device_type, r.driver, r.driver_info
    );
    if r.backend != "cpu" {
        let subgroups = if r.subgroups {
            format!("yes (size {}-{})", r.subgroup_size_min, r.subgroup_size_max)
        } else {
            "no".to_string()
        };
        println!(
            "       f16 {}, subgroups {}, timestamp queries {}, cooperative matrix {}",
            yes_no(r.f16),
            subgroups,
            yes_no(r.timestamp_queries),
            yes_no(r.cooperative_matrix)
        );
        println!(
            "       max buffer {}, max storage binding {}, workgroup memory {}, invocations {}",
            format_bytes(r.max_buffer_size),
            format_bytes(r.max_storage_binding_size),
            format_bytes(r.max_workgroup_storage_size as u64),
            r.max_invocations_per_workgroup
        );
    }
    let auto = if r.auto_eligible {
        "yes"
    } else {
        "no (software adapter: pick it by index)"
    };
    println!("       used by --device auto: {auto}");
}
