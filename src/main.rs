//! The `kes` binary: parses the command line and hands over to the library.

/// Counts live heap allocations for `kes_system_mem_heap_objects` (see `kes::heap`).
#[global_allocator]
static ALLOCATOR: kes::heap::CountingAllocator = kes::heap::CountingAllocator;

fn main() {
    std::process::exit(kes::cli::main());
}
