//! `kiln quantize -m LLM_FOLDER -o OUT.gguf --type q4_k_m|q6_k|q8_0`: the GGUF file is written and
//! loads back in `kiln chat`; bad types, non-LLM inputs and existing outputs are clear errors
//! that leave no file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-gguf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn quantize(model: &Path, out: &Path, ty: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["quantize", "--type", ty, "-m"])
        .arg(model)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
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
    assert_eq!(entries(&dir), ["tekken-q4_k_m.gguf"]);
    let gen = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env_remove("KILN_DEVICE")
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
    assert!(entries(&dir).is_empty());
    std::fs::write(dir.join("m.gguf"), b"keep").unwrap();
    let run = quantize(&tekken, &dir.join("m.gguf"), "q6_k");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(entries(&dir), ["m.gguf"]);
    assert_eq!(std::fs::read(dir.join("m.gguf")).unwrap(), b"keep");
}
