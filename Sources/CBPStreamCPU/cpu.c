// CBPStreamCPU is header-only (include/bpstream_cpu.h); SwiftPM needs a source file.
#include "bpstream_cpu.h"
