fn main() {
    cni_types::skel::run(topology_label_plugin::TopologyLabel)
}
