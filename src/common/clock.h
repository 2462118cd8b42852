/* Clocks. The daemon's core takes time as an argument; only the edges read it here. */
#ifndef ZGPU_COMMON_CLOCK_H
#define ZGPU_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic time in milliseconds: for deadlines and durations. */
static inline int64_t clock_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Monotonic time in microseconds: for latency measurements. */
static inline int64_t clock_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Wall-clock Unix time in milliseconds: only for what is shown to people. */
static inline int64_t clock_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
