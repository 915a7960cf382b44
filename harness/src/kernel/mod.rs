//! What the running kernel says about itself: drop-reason names (BTF, tracefs),
//! function names (kallsyms), tracepoint layouts (tracefs format files).
