/* Token masks for constrained decoding: a byte automaton walked over a token trie.
 *
 * The automaton (er_dfa) is a dense table of transitions, filled lazily by its owner: an
 * entry ER_UNKNOWN makes the walk ask the owner's callback for it. A token is allowed from a
 * state when every byte of it has a live transition and the state it ends in can still finish
 * the document within the budget (need[state] <= budget, also asked lazily).
 */
#ifndef ER_MASK_H
#define ER_MASK_H

#include <stddef.h>
#include <stdint.h>

#define ER_UNKNOWN (-1)      /* transition or need not computed yet */
#define ER_DEAD 0            /* state 0: no document can continue from here */
#define ER_NEED_INF INT32_MAX
#define ER_OP_STEP 0
#define ER_OP_NEED 1
#define ER_CALLBACK_ERROR (-2)

typedef struct {
    int32_t *table;          /* (cap, 256): state * 256 + byte -> state, ER_UNKNOWN, ER_DEAD */
    int32_t *fallback;       /* (cap): a state whose row serves the bytes outside own, or -1 */
    uint8_t *own;            /* (cap, 32): bit b set: byte b is this state's own */
    int32_t n_states;
    int32_t cap;
} er_dfa;

typedef struct {
    int32_t *v;
    int32_t n;
    int32_t cap;
} er_ivec;

/* Token trie in depth-first order: node i is reached by byte[i] from the last node before it
 * with depth depth[i] - 1 (the root has depth 0 and is not stored); next[i] is the index just
 * past i's subtree; token[i] the first token whose bytes end at i (-1 if none), dup[t] the next
 * token with the same bytes as token t (-1 if none). */
typedef struct {
    int32_t n_nodes;
    int32_t n_vocab;
    uint8_t *byte;
    uint8_t *depth;
    int32_t *token;
    int32_t *next;
    int32_t *dup;
} er_trie;

/* Returns a state / need >= 0, or ER_CALLBACK_ERROR (the caller holds the error). */
typedef int32_t (*er_resolve_fn)(void *ctx, int op, int32_t state, int32_t byte);

int er_dfa_init(er_dfa *d, int32_t cap);
/* the transition of s on byte b as far as the tables know it (following the fallback) */
static inline int32_t er_dfa_lookup(const er_dfa *d, int32_t s, int b, int32_t *from)
{
    int32_t t = d->table[(size_t)s * 256 + b];
    *from = s;
    if (t == ER_UNKNOWN && d->fallback[s] >= 0 && !((d->own[(size_t)s * 32 + (b >> 3)] >> (b & 7)) & 1)) {
        *from = d->fallback[s];
        t = d->table[(size_t)*from * 256 + b];
    }
    return t;
}
int32_t er_dfa_add_state(er_dfa *d);                 /* new state id, -1 when out of memory */
void er_dfa_free(er_dfa *d);

int er_ivec_resize(er_ivec *v, int32_t n, int32_t fill);
void er_ivec_free(er_ivec *v);

/* tokens sorted by their bytes; data + offsets[k]..offsets[k+1] are token ids[k]'s bytes,
 * every one non-empty and at most 255 bytes. Returns 0, or -1 when out of memory. */
int er_trie_build(er_trie *t, const uint8_t *data, const int64_t *offsets, const int32_t *ids,
                  int32_t n_tokens, int32_t n_vocab);
void er_trie_free(er_trie *t);

/* Lengths k (ascending) such that s[0:k] is a token; returns their count. */
int32_t er_trie_prefix_ends(const er_trie *t, const uint8_t *s, int32_t n, int32_t *out);

/* mask |= tokens allowed from `start` whose end state has need <= budget; *max_need is raised
 * to the largest such need. Returns 0, or -1 when the callback failed. */
int er_mask_walk(const er_trie *t, er_dfa *d, er_ivec *need, int32_t start, int32_t budget,
                 uint32_t *mask, int32_t *max_need, er_resolve_fn resolve, void *ctx);

void er_mask_or(uint32_t *dst, const uint32_t *src, int32_t n_words);
void er_mask_to_bool(const uint32_t *mask, int32_t n, uint8_t *out);

#endif
