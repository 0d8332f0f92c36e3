fn main() {
    println!("{}", slowpoke_agent::KERNEL_OBJECT.len());
}
