#!/bin/bash
# builds what `cargo xtask test` builds before its tests; prints target/ size after each
cd "$1"
F=slowpoke-agent/test-hooks,slowpoke-coordinator/fake
t0=$(date +%s)
cargo build --all-targets --features $F >/dev/null 2>&1 || echo BUILD1 FAILED
echo "after debug all-targets: $(du -sm target | cut -f1) MB, $(( $(date +%s)-t0 )) s"
du -sm target/debug/deps target/debug/build target/debug/incremental 2>/dev/null
cargo build --release -p slowpoke-emu --bin slowpoke-emu -p slowpoke-cli --bin slowpoke --no-default-features >/dev/null 2>&1 || echo BUILD2 FAILED
echo "after release: $(du -sm target | cut -f1) MB, $(( $(date +%s)-t0 )) s"
du -sm target/* | sort -n | tail -5
