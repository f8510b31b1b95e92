/* Monte-Carlo estimate of pi, one share of the samples per work unit.
 *
 * Usage: pi SEED SAMPLES
 * Prints "SEED INSIDE SAMPLES": how many of SAMPLES random points of the
 * unit square fell inside the quarter circle. pi ~ 4 * sum(INSIDE) /
 * sum(SAMPLES) over all units (see combine.sh). The generator is
 * xorshift64* seeded from SEED, so a unit gives the same answer on every
 * provider and natively. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t state;

static uint64_t next(void) {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 2685821657736338717ULL;
}

/* A uniform double in [0, 1) from the top 53 bits. */
static double uniform(void) { return (double)(next() >> 11) / 9007199254740992.0; }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: pi SEED SAMPLES\n");
        return 2;
    }
    uint64_t seed = strtoull(argv[1], NULL, 10);
    uint64_t samples = strtoull(argv[2], NULL, 10);
    /* SplitMix64 of the seed, so that seeds 1, 2, 3 give unrelated streams. */
    uint64_t z = seed + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    state = (z ^ (z >> 31)) | 1;
    uint64_t inside = 0;
    for (uint64_t i = 0; i < samples; i++) {
        double x = uniform(), y = uniform();
        if (x * x + y * y < 1.0) inside++;
    }
    printf("%llu %llu %llu\n", (unsigned long long)seed, (unsigned long long)inside,
           (unsigned long long)samples);
    return 0;
}
