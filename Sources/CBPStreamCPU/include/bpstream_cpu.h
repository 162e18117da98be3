/* CPU hints the Swift core needs and Swift cannot spell. Internal to bpstream. */
#ifndef BPSTREAM_CPU_H
#define BPSTREAM_CPU_H

/* Tells the CPU this is a spin-wait loop: on x86 `pause` lets a hyperthread sibling (the
 * thread we are waiting for, on a 2-vCPU machine) run at full speed, and saves power. */
static inline void bps_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
