//! `kiln bench kernels`: each kernel at standard shapes, as a table and optionally JSON.

use anyhow::Result;
use kiln_benches::kernel_cases;
use kiln_runtime::Device;

use super::table::{self, TableArgs};

pub fn run(args: &TableArgs, device: &Device) -> Result<()> {
    let size = table::size(args);
    table::run(args, device, (2, 10), |dtype| kernel_cases(size, dtype))
}
