/* Counts the primes below LIMIT, one block of the number line at a time,
 * and checkpoints after every block, BOINC-style: a long computation that
 * survives its provider.
 *
 *   primes LIMIT [BLOCK]
 *
 * After each block it writes its state ("next-block count", text) to
 * /scratch/checkpoint and calls the host's cairn.checkpoint(); on start it
 * resumes from that file if it exists, so a unit reassigned to another
 * provider goes on from the last checkpoint instead of from zero. stdout
 * is the answer alone, so every run gives the same bytes; stderr says
 * where the run started. Native builds keep the checkpoint in ./checkpoint
 * and have no host to call. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __wasm__
__attribute__((import_module("cairn"), import_name("checkpoint"))) int cairn_checkpoint(void);
#define CHECKPOINT "/scratch/checkpoint"
#else
static int cairn_checkpoint(void) { return 0; }
#define CHECKPOINT "checkpoint"
#endif

/* Odd primes up to sqrt(LIMIT), for sieving each block. */
static uint32_t *base;
static size_t nbase;

static void base_primes(uint64_t limit) {
    uint64_t r = 1;
    while (r * r < limit) r++;
    char *composite = calloc(r + 1, 1);
    base = malloc((r + 1) * sizeof *base);
    if (!composite || !base) {
        fprintf(stderr, "primes: out of memory\n");
        exit(1);
    }
    for (uint64_t i = 3; i <= r; i += 2) {
        if (composite[i]) continue;
        base[nbase++] = (uint32_t)i;
        for (uint64_t j = i * i; j <= r; j += 2 * i) composite[j] = 1;
    }
    free(composite);
}

static void save(uint64_t next, uint64_t count) {
    FILE *f = fopen(CHECKPOINT, "w");
    if (!f) return;
    fprintf(f, "%llu %llu\n", (unsigned long long)next, (unsigned long long)count);
    if (fclose(f) == 0) cairn_checkpoint();
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: primes LIMIT [BLOCK]\n");
        return 2;
    }
    uint64_t limit = strtoull(argv[1], NULL, 10);
    uint64_t block = argc == 3 ? strtoull(argv[2], NULL, 10) : 1000000;
    if (block == 0 || block % 2) {
        fprintf(stderr, "primes: BLOCK must be even and positive\n");
        return 2;
    }
    base_primes(limit);
    /* Blocks cover [lo, lo + block); only odd numbers are sieved. */
    uint64_t next = 0, count = limit > 2 ? 1 : 0; /* 2 is prime */
    FILE *f = fopen(CHECKPOINT, "r");
    if (f) {
        unsigned long long n, c;
        if (fscanf(f, "%llu %llu", &n, &c) == 2) {
            next = n;
            count = c;
        }
        fclose(f);
    }
    fprintf(stderr, "starting at block %llu\n", (unsigned long long)next);
    char *composite = malloc(block / 2);
    if (!composite) {
        fprintf(stderr, "primes: out of memory\n");
        return 1;
    }
    for (uint64_t lo = next * block; lo < limit; lo += block, next++) {
        uint64_t hi = lo + block < limit ? lo + block : limit;
        /* composite[i] stands for the odd number lo + 2i + 1. */
        memset(composite, 0, block / 2);
        for (size_t k = 0; k < nbase; k++) {
            uint64_t p = base[k];
            uint64_t start = p * p;
            if (start >= hi) break;
            if (start < lo) start = (lo + p - 1) / p * p;
            if (start % 2 == 0) start += p;
            for (uint64_t m = start; m < hi; m += 2 * p) composite[(m - lo - 1) / 2] = 1;
        }
        for (uint64_t x = lo + 1; x < hi; x += 2)
            if (x > 1 && !composite[(x - lo - 1) / 2]) count++;
        save(next + 1, count);
    }
    printf("%llu primes below %llu\n", (unsigned long long)count, (unsigned long long)limit);
    return 0;
}
