fn main() {
    cni_types::skel::run(bandwidth_plugin::Bandwidth)
}
