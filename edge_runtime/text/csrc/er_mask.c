/* Token masks over a token trie: see er_mask.h. */
#include "er_mask.h"

#include <stdlib.h>
#include <string.h>

int er_dfa_init(er_dfa *d, int32_t cap)
{
    if (cap < 1)
        cap = 1;
    d->table = (int32_t *)malloc((size_t)cap * 256 * sizeof(int32_t));
    d->fallback = (int32_t *)malloc((size_t)cap * sizeof(int32_t));
    d->own = (uint8_t *)malloc((size_t)cap * 32);
    if (!d->table || !d->fallback || !d->own) {
        er_dfa_free(d);
        return -1;
    }
    d->n_states = 0;
    d->cap = cap;
    return 0;
}

int32_t er_dfa_add_state(er_dfa *d)
{
    if (d->n_states == d->cap) {
        int32_t cap = d->cap * 2;
        int32_t *t = (int32_t *)realloc(d->table, (size_t)cap * 256 * sizeof(int32_t));
        if (!t)
            return -1;
        d->table = t;
        int32_t *f = (int32_t *)realloc(d->fallback, (size_t)cap * sizeof(int32_t));
        if (!f)
            return -1;
        d->fallback = f;
        uint8_t *o = (uint8_t *)realloc(d->own, (size_t)cap * 32);
        if (!o)
            return -1;
        d->own = o;
        d->cap = cap;
    }
    int32_t s = d->n_states++;
    int32_t *row = d->table + (size_t)s * 256;
    for (int b = 0; b < 256; b++)
        row[b] = ER_UNKNOWN;
    d->fallback[s] = -1;
    memset(d->own + (size_t)s * 32, 0, 32);
    return s;
}

void er_dfa_free(er_dfa *d)
{
    free(d->table);
    free(d->fallback);
    free(d->own);
    d->table = NULL;
    d->fallback = NULL;
    d->own = NULL;
    d->n_states = d->cap = 0;
}

int er_ivec_resize(er_ivec *v, int32_t n, int32_t fill)
{
    if (n > v->cap) {
        int32_t cap = v->cap ? v->cap : 64;
        while (cap < n)
            cap *= 2;
        int32_t *p = (int32_t *)realloc(v->v, (size_t)cap * sizeof(int32_t));
        if (!p)
            return -1;
        v->v = p;
        v->cap = cap;
    }
    for (int32_t i = v->n; i < n; i++)
        v->v[i] = fill;
    if (n > v->n)
        v->n = n;
    return 0;
}

void er_ivec_free(er_ivec *v)
{
    free(v->v);
    v->v = NULL;
    v->n = v->cap = 0;
}

int er_trie_build(er_trie *t, const uint8_t *data, const int64_t *offsets, const int32_t *ids,
                  int32_t n_tokens, int32_t n_vocab)
{
    memset(t, 0, sizeof(*t));
    int64_t total = offsets[n_tokens] - offsets[0];
    size_t cap = (size_t)(total > 0 ? total : 1);
    t->byte = (uint8_t *)malloc(cap);
    t->depth = (uint8_t *)malloc(cap);
    t->token = (int32_t *)malloc(cap * sizeof(int32_t));
    t->next = (int32_t *)malloc(cap * sizeof(int32_t));
    t->dup = (int32_t *)malloc((size_t)(n_vocab > 0 ? n_vocab : 1) * sizeof(int32_t));
    if (!t->byte || !t->depth || !t->token || !t->next || !t->dup) {
        er_trie_free(t);
        return -1;
    }
    t->n_vocab = n_vocab;
    for (int32_t i = 0; i < n_vocab; i++)
        t->dup[i] = -1;
    int32_t open[257];          /* open[d]: index of the current node at depth d (1-based) */
    int32_t n = 0;
    const uint8_t *prev = NULL;
    int32_t prev_len = 0;
    for (int32_t k = 0; k < n_tokens; k++) {
        const uint8_t *w = data + offsets[k];
        int32_t len = (int32_t)(offsets[k + 1] - offsets[k]);
        int32_t lcp = 0;
        while (lcp < len && lcp < prev_len && w[lcp] == prev[lcp])
            lcp++;
        /* nodes deeper than the common prefix end their subtrees here */
        for (int32_t dd = lcp + 1; dd <= prev_len; dd++)
            t->next[open[dd]] = n;
        for (int32_t dd = lcp + 1; dd <= len; dd++) {
            t->byte[n] = w[dd - 1];
            t->depth[n] = (uint8_t)dd;
            t->token[n] = -1;
            open[dd] = n;
            n++;
        }
        int32_t end = open[len];
        if (t->token[end] < 0) {
            t->token[end] = ids[k];
        } else {                /* same bytes as an earlier token: chain it */
            int32_t tok = t->token[end];
            while (t->dup[tok] >= 0)
                tok = t->dup[tok];
            t->dup[tok] = ids[k];
        }
        prev = w;
        prev_len = len;
    }
    for (int32_t dd = 1; dd <= prev_len; dd++)
        t->next[open[dd]] = n;
    t->n_nodes = n;
    return 0;
}

void er_trie_free(er_trie *t)
{
    free(t->byte);
    free(t->depth);
    free(t->token);
    free(t->next);
    free(t->dup);
    memset(t, 0, sizeof(*t));
}

int32_t er_trie_prefix_ends(const er_trie *t, const uint8_t *s, int32_t n, int32_t *out)
{
    int32_t count = 0;
    int32_t child = 0, end = t->n_nodes;     /* siblings of the current level: [child, end) */
    for (int32_t k = 0; k < n; k++) {
        int32_t found = -1;
        while (child < end) {
            if (t->byte[child] == s[k]) {
                found = child;
                break;
            }
            child = t->next[child];
        }
        if (found < 0)
            break;
        if (t->token[found] >= 0)
            out[count++] = k + 1;
        child = found + 1;
        end = t->next[found];
    }
    return count;
}

int er_mask_walk(const er_trie *t, er_dfa *d, er_ivec *need, int32_t start, int32_t budget,
                 uint32_t *mask, int32_t *max_need, er_resolve_fn resolve, void *ctx)
{
    int32_t stack[257];
    stack[0] = start;
    int32_t i = 0;
    const int32_t n = t->n_nodes;
    while (i < n) {
        int dep = t->depth[i];
        int32_t from = stack[dep - 1];
        int32_t owner;
        int32_t s = er_dfa_lookup(d, from, t->byte[i], &owner);
        if (s == ER_UNKNOWN) {
            s = resolve(ctx, ER_OP_STEP, owner, t->byte[i]);
            if (s < 0)
                return -1;
        }
        if (s == ER_DEAD) {
            i = t->next[i];
            continue;
        }
        stack[dep] = s;
        int32_t tok = t->token[i];
        if (tok >= 0) {
            int32_t nd = s < need->n ? need->v[s] : ER_UNKNOWN;
            if (nd == ER_UNKNOWN) {
                nd = resolve(ctx, ER_OP_NEED, s, 0);
                if (nd < 0)
                    return -1;
            }
            if (nd <= budget) {
                for (; tok >= 0; tok = t->dup[tok])
                    mask[tok >> 5] |= 1u << (tok & 31);
                if (nd > *max_need)
                    *max_need = nd;
            }
        }
        i++;
    }
    return 0;
}

void er_mask_or(uint32_t *dst, const uint32_t *src, int32_t n_words)
{
    for (int32_t i = 0; i < n_words; i++)
        dst[i] |= src[i];
}

void er_mask_to_bool(const uint32_t *mask, int32_t n, uint8_t *out)
{
    for (int32_t i = 0; i < n; i++)
        out[i] = (uint8_t)((mask[i >> 5] >> (i & 31)) & 1u);
}
