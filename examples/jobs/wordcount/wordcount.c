/* Word count, as map units and a reduce unit.
 *
 *   wordcount map      reads text on stdin, prints "WORD COUNT" lines
 *   wordcount reduce   reads "WORD COUNT" lines (map outputs, concatenated)
 *                      on stdin, prints the summed counts
 *
 * A word is a run of ASCII letters and digits, lower-cased, at most 63
 * bytes (longer runs are cut). Output is sorted by word, so every run of a
 * unit prints the same bytes. Counts live in an open-addressing table that
 * doubles as it fills. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORD 63

struct entry {
    char *word;
    uint64_t count;
};

static struct entry *table;
static size_t cap = 1024, used;

static uint64_t hash(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void die(const char *what) {
    fprintf(stderr, "wordcount: %s\n", what);
    exit(1);
}

static void add(const char *word, uint64_t n);

static void grow(void) {
    struct entry *old = table;
    size_t old_cap = cap;
    cap *= 2;
    table = calloc(cap, sizeof *table);
    if (!table) die("out of memory");
    used = 0;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].word) {
            add(old[i].word, old[i].count);
            free(old[i].word);
        }
    }
    free(old);
}

static void add(const char *word, uint64_t n) {
    if ((used + 1) * 4 > cap * 3) grow();
    size_t i = hash(word) & (cap - 1);
    while (table[i].word && strcmp(table[i].word, word) != 0) i = (i + 1) & (cap - 1);
    if (!table[i].word) {
        table[i].word = strdup(word);
        if (!table[i].word) die("out of memory");
        used++;
    }
    table[i].count += n;
}

static int by_word(const void *a, const void *b) {
    return strcmp(((const struct entry *)a)->word, ((const struct entry *)b)->word);
}

static void map(void) {
    char word[MAX_WORD + 1];
    size_t len = 0;
    int c;
    while ((c = getchar()) != EOF) {
        if (isalnum(c) && c < 128) {
            if (len < MAX_WORD) word[len++] = (char)tolower(c);
        } else if (len) {
            word[len] = 0;
            add(word, 1);
            len = 0;
        }
    }
    if (len) {
        word[len] = 0;
        add(word, 1);
    }
}

static void reduce(void) {
    char word[MAX_WORD + 1];
    unsigned long long n;
    int got;
    while ((got = scanf("%63s %llu", word, &n)) == 2) add(word, n);
    if (got != EOF) die("reduce input is not \"WORD COUNT\" lines");
}

int main(int argc, char **argv) {
    table = calloc(cap, sizeof *table);
    if (!table) die("out of memory");
    if (argc == 2 && strcmp(argv[1], "map") == 0) {
        map();
    } else if (argc == 2 && strcmp(argv[1], "reduce") == 0) {
        reduce();
    } else {
        fprintf(stderr, "usage: wordcount map|reduce\n");
        return 2;
    }
    struct entry *out = malloc((used ? used : 1) * sizeof *out);
    if (!out) die("out of memory");
    size_t k = 0;
    for (size_t i = 0; i < cap; i++)
        if (table[i].word) out[k++] = table[i];
    qsort(out, k, sizeof *out, by_word);
    for (size_t i = 0; i < k; i++) printf("%s %llu\n", out[i].word, (unsigned long long)out[i].count);
    return 0;
}
