//! Records the commit the binary is built from (`FUM_COMMIT`: `git describe --always --dirty`,
//! so a build with uncommitted changes says so; "unknown" outside a git checkout), for the
//! machine fingerprint of `fum bench`.
fn main() {
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FUM_COMMIT={commit}");
    // A commit, a checkout or staged changes: the index or a ref moves.
    for path in [".git/HEAD", ".git/refs/heads", ".git/index"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
