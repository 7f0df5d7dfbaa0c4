/* bench-noop: does nothing and exits 0. scripts/bench.sh runs it exactly as
 * it runs a plugin (same wrapper, same stdin) to measure the cost of
 * starting a process: the floor under every plugin's wall time. Built
 * static with musl (the floor) and dynamic with glibc (for context). */
int main(void) { return 0; }
