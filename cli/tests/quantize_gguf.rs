//! `kiln quantize -m LLM_FOLDER -o OUT.gguf --type q4_k_m|q6_k|q8_0`: the GGUF file is written and
//! loads back in `kiln chat`; bad types, non-LLM inputs and existing outputs are clear errors
//! that leave no file.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{files_in, fixtures, kiln, temp_dir};

fn quantize(model: &Path, out: &Path, ty: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["quantize", "--type", ty, "-m"])
        .arg(model)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn q4_k_m_writes_a_gguf_that_loads() {
    let dir = temp_dir("ok");
    let out = dir.join("tekken-q4_k_m.gguf");
    let run = quantize(&fixtures().join("llm/gguf/tekken"), &out, "q4_k_m");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    // tekken's rows (32, 64) are not whole 256-weight blocks: Q5_0 / Q8_0 fallbacks.
    assert!(
        err.contains("GGUF q4_k_m, 21 tensors") && err.contains("Q5_0") && err.contains("5 F32"),
        "{err}"
    );
    assert_eq!(files_in(&dir), ["tekken-q4_k_m.gguf"]);
    let gen = kiln()
        .args(["--device", "cpu", "chat", "-m"])
        .arg(&out)
        .args(["-p", "hello", "-n", "4", "--temp", "0"])
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
}

#[test]
fn bad_types_inputs_and_existing_outputs_leave_no_file() {
    let dir = temp_dir("bad");
    let tekken = fixtures().join("llm/gguf/tekken");
    let run = quantize(&tekken, &dir.join("m.gguf"), "q4_0");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(err.contains("q4_k_m, q6_k, q8_0"), "{err}");
    let run = quantize(&fixtures().join("tiny-sd1"), &dir.join("m.gguf"), "q4_k_m");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("needs an LLM folder"),
        "{err}"
    );
    assert!(files_in(&dir).is_empty());
    std::fs::write(dir.join("m.gguf"), b"keep").unwrap();
    let run = quantize(&tekken, &dir.join("m.gguf"), "q6_k");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(files_in(&dir), ["m.gguf"]);
    assert_eq!(std::fs::read(dir.join("m.gguf")).unwrap(), b"keep");
}
