/*
 * ps_keyed.c - the keyed kind of local store: rows of `width` floats
 * addressed by 64-bit keys, created on their first push.
 *
 * The keys are spread over stripes by a hash; each stripe has its own
 * mutex, its own open-addressing table (key -> row) and its own rows,
 * stored contiguously with their optimizer state: row r holds
 * w[width], then s0[width] and s1[width] when the rule has them. A call
 * holds every stripe it touches at once (in ascending order: never a
 * deadlock), so that readers see a push whole. The table's hash is
 * seeded per store, so that a peer cannot choose keys that collide.
 */
#define _GNU_SOURCE
#include "ps.h"

#include "abi.h"
#include "ckpt.h"
#include "optim.h"
#include "sys.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>

#define MAX_STRIPES 4096
#define MIN_TABLE 16 /* slots of a stripe's first table */

typedef struct kv_slot {
	uint64_t key;
	uint64_t row; /* row index + 1; 0 = empty */
} kv_slot;

typedef struct kv_stripe {
	pthread_mutex_t mu;
	kv_slot *tab;    /* cap slots, at most half full */
	size_t cap;
	size_t n;        /* rows */
	float *rows;     /* rows_cap rows of rl floats */
	uint64_t *keys;  /* the key of each row */
	size_t rows_cap;
} kv_stripe;

struct dml__kv {
	size_t nstripes;
	size_t rl; /* floats per row: width * (1 + state vectors) */
	uint64_t seed; /* of the table hash */
	uint64_t max_rows; /* 0 = no bound */
	atomic_uint_fast64_t nrows;
	dml_ps_init init;
	float scale;
	uint64_t init_seed;
	kv_stripe *st;
};

static uint64_t mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static uint64_t hash_of(const dml__kv *kv, uint64_t key)
{
	return mix(key ^ kv->seed);
}

static size_t stripe_of(const dml__kv *kv, uint64_t h)
{
	return (size_t)(((h >> 32) * (uint64_t)kv->nstripes) >> 32);
}

uint64_t dml__kv_rows(const dml_ps *ps)
{
	return atomic_load(&ps->kv->nrows);
}

/* ---- initial values ------------------------------------------------ */

/* Element c of an absent row `key`: a function of (seed, key, c) only. */
static void row_init(const dml__kv *kv, uint64_t key, float *w, size_t width)
{
	if (kv->init == DML_PS_INIT_ZERO) {
		memset(w, 0, width * sizeof *w);
		return;
	}
	uint64_t base = mix(key ^ mix(kv->init_seed + 0x9e3779b97f4a7c15ULL));
	for (size_t c = 0; c < width; c++) {
		uint64_t u = mix(base + (uint64_t)c * 0x9e3779b97f4a7c15ULL);
		double a = (double)(u >> 40) * (1.0 / 16777216.0); /* [0, 1) */
		if (kv->init == DML_PS_INIT_UNIFORM) {
			w[c] = (float)((2 * a - 1) * kv->scale);
		} else { /* Box-Muller, from two 24-bit halves of u */
			double b = (double)((u >> 16) & 0xffffff) * (1.0 / 16777216.0);
			double r = sqrt(-2 * log(1 - a)); /* 1 - a in (0, 1] */
			w[c] = (float)(r * cos(6.283185307179586 * b) * kv->scale);
		}
	}
}

/* ---- a stripe's table ---------------------------------------------- */

/* The slot holding key, or the empty slot where it would go; NULL when
 * the stripe has no table yet. */
static kv_slot *slot_of(const kv_stripe *s, uint64_t key, uint64_t h)
{
	if (!s->cap)
		return NULL;
	size_t m = s->cap - 1, i = (size_t)h & m;
	while (s->tab[i].row && s->tab[i].key != key)
		i = (i + 1) & m;
	return &s->tab[i];
}

/* Large tables and row arrays are read at random: on huge pages, a
 * lookup costs no TLB miss on top of its cache miss. A hint only. */
static void hint_huge(void *p, size_t len)
{
#ifdef MADV_HUGEPAGE
	const uintptr_t huge = (uintptr_t)2 << 20;
	uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1);
	uintptr_t b = ((uintptr_t)p + len) & ~(huge - 1);
	if (b > a)
		madvise((void *)a, b - a, MADV_HUGEPAGE);
#else
	(void)p;
	(void)len;
#endif
}

/* Room for `more` new rows in s, or DML_ENOMEM with s as it was. */
static int reserve(dml__kv *kv, kv_stripe *s, size_t more)
{
	size_t need = s->n + more;
	if (need > s->rows_cap) {
		size_t cap = s->rows_cap ? s->rows_cap : MIN_TABLE / 2;
		while (cap < need)
			cap *= 2;
		if (cap > SIZE_MAX / sizeof(float) / kv->rl)
			return DML_ENOMEM;
		float *rows = realloc(s->rows, cap * kv->rl * sizeof(float));
		if (!rows)
			return DML_ENOMEM;
		s->rows = rows;
		hint_huge(rows, cap * kv->rl * sizeof(float));
		uint64_t *keys = realloc(s->keys, cap * sizeof *keys);
		if (!keys)
			return DML_ENOMEM; /* rows grew: harmless */
		s->keys = keys;
		s->rows_cap = cap;
	}
	if (need * 2 > s->cap) {
		size_t cap = s->cap ? s->cap : MIN_TABLE;
		while (cap < need * 2)
			cap *= 2;
		kv_slot *tab = calloc(cap, sizeof *tab);
		if (!tab)
			return DML_ENOMEM;
		hint_huge(tab, cap * sizeof *tab);
		kv_slot *old = s->tab;
		s->tab = tab;
		s->cap = cap;
		for (size_t r = 0; r < s->n; r++) {
			kv_slot *e = slot_of(s, s->keys[r], hash_of(kv, s->keys[r]));
			e->key = s->keys[r];
			e->row = r + 1;
		}
		free(old);
	}
	return 0;
}

/* The row of key, created from its initial value if absent (room was
 * reserved). */
static float *row_get(dml__kv *kv, kv_stripe *s, uint64_t key, uint64_t h,
                      size_t width)
{
	kv_slot *e = slot_of(s, key, h);
	if (e->row)
		return s->rows + (e->row - 1) * kv->rl;
	size_t r = s->n++;
	e->key = key;
	e->row = r + 1;
	s->keys[r] = key;
	float *row = s->rows + r * kv->rl;
	row_init(kv, key, row, width);
	memset(row + width, 0, (kv->rl - width) * sizeof(float));
	return row;
}

/* ---- locking the stripes of a call --------------------------------- */

typedef struct stripes_held {
	uint64_t mark[MAX_STRIPES / 64];
} stripes_held;

static void lock_marked(dml__kv *kv, const stripes_held *m)
{
	for (size_t k = 0; k < kv->nstripes; k++)
		if (m->mark[k / 64] >> (k % 64) & 1)
			pthread_mutex_lock(&kv->st[k].mu);
}

static void unlock_marked(dml__kv *kv, const stripes_held *m)
{
	for (size_t k = kv->nstripes; k-- > 0;)
		if (m->mark[k / 64] >> (k % 64) & 1)
			pthread_mutex_unlock(&kv->st[k].mu);
}

static void mark(stripes_held *m, size_t k)
{
	m->mark[k / 64] |= (uint64_t)1 << (k % 64);
}

/* ---- operations ---------------------------------------------------- */

/* ---- finding the rows of a call ------------------------------------ */

/* Probes ahead of the one in hand: the table's slots and the rows are
 * random accesses in memory, and a store serves many at once when the
 * next ones' are already on their way. */
#define AHEAD 16

/* A macro, not a function: gcc takes a function that only prefetches for
 * one without effects, and removes its calls. */
#define PREFETCH_SLOT(kv, h)                                                   \
	do {                                                                   \
		const kv_stripe *ps_ = &(kv)->st[stripe_of((kv), (h))];        \
		if (ps_->cap)                                                  \
			__builtin_prefetch(&ps_->tab[(size_t)(h) & (ps_->cap - 1)]); \
	} while (0)

/* row[i] = the row of keys[i] (hash h[i]), or NULL if absent. Its
 * stripes must be held. */
static void locate(const dml__kv *kv, const uint64_t *keys, size_t n,
                   const uint64_t *h, float **row)
{
	for (size_t i = 0; i < n && i < AHEAD; i++)
		PREFETCH_SLOT(kv, h[i]);
	for (size_t i = 0; i < n; i++) {
		if (i + AHEAD < n)
			PREFETCH_SLOT(kv, h[i + AHEAD]);
		const kv_stripe *s = &kv->st[stripe_of(kv, h[i])];
		kv_slot *e = slot_of(s, keys[i], h[i]);
		row[i] = e && e->row ? s->rows + (e->row - 1) * kv->rl : NULL;
		if (row[i])
			__builtin_prefetch(row[i], 1);
	}
}

/* The scratch of a call: a hash and a row per key. */
typedef struct scratch {
	uint64_t *h;
	float **row;
	uint64_t h_small[64];
	float *row_small[64];
} scratch;

static int scratch_get(scratch *sc, size_t n)
{
	if (n <= 64) {
		sc->h = sc->h_small;
		sc->row = sc->row_small;
		return 0;
	}
	sc->h = malloc(n * sizeof *sc->h);
	sc->row = malloc(n * sizeof *sc->row);
	if (sc->h && sc->row)
		return 0;
	free(sc->h);
	free(sc->row);
	return DML_ENOMEM;
}

static void scratch_free(scratch *sc)
{
	if (sc->h != sc->h_small) {
		free(sc->h);
		free(sc->row);
	}
}

static void copy_row(float *dst, const float *src, size_t width)
{
	if (width <= 8)
		for (size_t c = 0; c < width; c++)
			dst[c] = src[c];
	else
		memcpy(dst, src, width * sizeof *dst);
}

/* ---- operations ---------------------------------------------------- */

static int kv_pull_rows(dml_ps *ps, const uint64_t *keys, size_t n, float *out)
{
	dml__kv *kv = ps->kv;
	size_t width = ps->width;
	scratch sc;
	if (scratch_get(&sc, n))
		return DML_ENOMEM;
	stripes_held m = {{0}};
	for (size_t i = 0; i < n; i++)
		mark(&m, stripe_of(kv, sc.h[i] = hash_of(kv, keys[i])));
	lock_marked(kv, &m);
	locate(kv, keys, n, sc.h, sc.row);
	for (size_t i = 0; i < n; i++) {
		if (sc.row[i])
			copy_row(out + i * width, sc.row[i], width);
		else
			row_init(kv, keys[i], out + i * width, width);
	}
	unlock_marked(kv, &m);
	scratch_free(&sc);
	return 0;
}

/* A set of keys (the new ones of a push, counted once each). */
typedef struct key_set {
	uint64_t *k;
	unsigned char *used;
	size_t cap;
} key_set;

static int set_add(key_set *ks, uint64_t key)
{
	size_t m = ks->cap - 1, i = (size_t)mix(key) & m;
	while (ks->used[i]) {
		if (ks->k[i] == key)
			return 0;
		i = (i + 1) & m;
	}
	ks->used[i] = 1;
	ks->k[i] = key;
	return 1;
}

/* ADD or SET on one row (steps go through dml__optim_apply_rows). */
static void rows_op(dml_ps *ps, int op, float *row, const float *v)
{
	size_t width = ps->width;
	if (op == DML__PS_ADD)
		for (size_t c = 0; c < width; c++)
			row[c] += v[c];
	else
		copy_row(row, v, width);
}

/* The new rows a push creates, per stripe (fresh[k]); *added in all.
 * Repeated new keys count once. */
static int count_new(dml__kv *kv, const uint64_t *keys, size_t n,
                     float *const *row, const uint64_t *h, size_t *fresh,
                     uint64_t *added)
{
	size_t absent = 0;
	for (size_t i = 0; i < n; i++)
		absent += !row[i];
	*added = 0;
	if (!absent)
		return 0;
	size_t cap = 16;
	while (cap < absent * 2)
		cap *= 2;
	key_set ks = {malloc(cap * sizeof *ks.k), calloc(cap, 1), cap};
	int rc = ks.k && ks.used ? 0 : DML_ENOMEM;
	for (size_t i = 0; i < n && !rc; i++)
		if (!row[i] && set_add(&ks, keys[i])) {
			fresh[stripe_of(kv, h[i])]++;
			++*added;
		}
	free(ks.k);
	free(ks.used);
	return rc;
}

/* Room for `added` new rows (fresh[k] in stripe k) within max_rows: 0,
 * DML_EFULL or DML_ENOMEM, with nothing changed on failure. */
static int make_room(dml__kv *kv, const size_t *fresh, uint64_t added)
{
	uint_fast64_t cur = atomic_load(&kv->nrows);
	do {
		if (kv->max_rows && (cur > kv->max_rows || added > kv->max_rows - cur))
			return dml__fail(DML_EFULL, "%llu new rows beside %llu: more "
			                 "than max_rows %llu; nothing changed",
			                 (unsigned long long)added, (unsigned long long)cur,
			                 (unsigned long long)kv->max_rows);
	} while (!atomic_compare_exchange_weak(&kv->nrows, &cur, cur + added));
	for (size_t k = 0; k < kv->nstripes; k++)
		if (fresh[k] && reserve(kv, &kv->st[k], fresh[k])) {
			atomic_fetch_sub(&kv->nrows, added);
			return DML_ENOMEM; /* what grew stays grown: unseen */
		}
	return 0;
}

static int kv_apply_rows(dml_ps *ps, int op, const uint64_t *keys, size_t n,
                         const float *v)
{
	dml__kv *kv = ps->kv;
	size_t width = ps->width;
	scratch sc;
	size_t *fresh = calloc(kv->nstripes, sizeof *fresh);
	if (!fresh || scratch_get(&sc, n)) {
		free(fresh);
		return DML_ENOMEM;
	}
	stripes_held m = {{0}};
	for (size_t i = 0; i < n; i++)
		mark(&m, stripe_of(kv, sc.h[i] = hash_of(kv, keys[i])));
	lock_marked(kv, &m);
	locate(kv, keys, n, sc.h, sc.row);
	uint64_t added;
	int rc = count_new(kv, keys, n, sc.row, sc.h, fresh, &added);
	if (!rc && added)
		rc = make_room(kv, fresh, added);
	if (!rc) {
		float lr;
		uint64_t t = dml__ps_step_of(ps, op, &lr);
		if (added) /* new rows moved the others: find each again */
			for (size_t i = 0; i < n; i++)
				sc.row[i] = row_get(kv, &kv->st[stripe_of(kv, sc.h[i])],
				                    keys[i], sc.h[i], width);
		if (op == DML__PS_STEP || op == DML__PS_STEP_MORE)
			dml__optim_apply_rows(&ps->optim, lr, t, sc.row, v, n, width);
		else
			for (size_t i = 0; i < n; i++)
				rows_op(ps, op, sc.row[i], v + i * width);
		if (op != DML__PS_STEP_MORE)
			atomic_fetch_add(&ps->updates, 1);
	}
	unlock_marked(kv, &m);
	scratch_free(&sc);
	free(fresh);
	return rc;
}

static int kv_rows(dml_ps *ps, uint64_t *count)
{
	*count = dml__kv_rows(ps);
	return 0;
}

static void kv_free(dml_ps *ps)
{
	dml__kv *kv = ps->kv;
	if (!kv)
		return;
	for (size_t k = 0; k < kv->nstripes; k++) {
		pthread_mutex_destroy(&kv->st[k].mu);
		free(kv->st[k].tab);
		free(kv->st[k].rows);
		free(kv->st[k].keys);
	}
	free(kv->st);
	free(kv);
	ps->kv = NULL;
}

/* ---- checkpoints --------------------------------------------------- */

#define KV_KIND 0x564b4d44u /* "DMKV" */
#define TAG_KEYS 1u
#define TAG_ROWS 2u
/* meta: width, rows, row_init, init_scale, init_seed, then the dense
 * store's meta (dim 0) */
enum { KV_META = 8 + 8 + 4 + 4 + 8, KV_META_LEN = KV_META + DML__PS_META_LEN };
/* deflate expands at most about 1032:1; a file's sections cannot hold
 * more than this many times its size (what a file claims is checked
 * against it before anything is allocated) */
#define INFLATE_MAX 1100

static int kv_save(dml_ps *ps, const char *path)
{
	dml__kv *kv = ps->kv;
	/* each stripe copied whole, one at a time */
	size_t cap = 0, n = 0;
	uint64_t *keys = NULL;
	float *rows = NULL;
	uint64_t steps = atomic_load(&ps->steps), updates = atomic_load(&ps->updates);
	int rc = 0;
	for (size_t k = 0; k < kv->nstripes && !rc; k++) {
		kv_stripe *s = &kv->st[k];
		pthread_mutex_lock(&s->mu);
		if (n + s->n > cap) {
			size_t nc = (n + s->n) * 2;
			uint64_t *nk = realloc(keys, nc * sizeof *nk);
			if (nk)
				keys = nk;
			float *nr = nk ? realloc(rows, nc * kv->rl * sizeof *nr) : NULL;
			if (nr)
				rows = nr;
			if (!nk || !nr)
				rc = DML_ENOMEM;
			else
				cap = nc;
		}
		if (!rc && s->n) {
			memcpy(keys + n, s->keys, s->n * sizeof *keys);
			memcpy(rows + n * kv->rl, s->rows, s->n * kv->rl * sizeof *rows);
			n += s->n;
		}
		pthread_mutex_unlock(&s->mu);
	}
	uint8_t *dd = NULL;
	size_t ddlen = 0;
	if (!rc)
		rc = dml__ps_dedup_export(ps, &dd, &ddlen);
	if (rc) {
		free(keys);
		free(rows);
		return rc;
	}
	uint8_t meta[KV_META_LEN];
	dml__put_u64(meta, ps->width);
	dml__put_u64(meta + 8, n);
	dml__put_u32(meta + 16, (uint32_t)kv->init);
	memcpy(meta + 20, &kv->scale, 4);
	dml__put_u64(meta + 24, kv->init_seed);
	dml__ps_meta_put(ps, steps, updates, meta + KV_META);
	dml__ckpt_sec secs[3] = {{TAG_KEYS, keys, n * sizeof *keys},
	                         {TAG_ROWS, rows, n * kv->rl * sizeof *rows},
	                         {DML__PS_TAG_DEDUP, dd, ddlen}};
	errno = 0;
	rc = dml__ckpt_save_with(path, KV_KIND, meta, KV_META_LEN, secs,
	                         dd ? 3 : 2, DML__CKPT_LEVEL_DEFAULT, &ps->ckpt);
	rc = dml__ps_ckpt_failed(path, rc);
	free(keys);
	free(rows);
	free(dd);
	return rc;
}

/* New stripes holding the n rows (keys[i], rows + i * rl); DML_EFORMAT
 * for a key twice. */
static int build(dml__kv *kv, const uint64_t *keys, const float *rows,
                 size_t n, kv_stripe *st)
{
	size_t *cnt = calloc(kv->nstripes, sizeof *cnt);
	if (!cnt)
		return DML_ENOMEM;
	for (size_t i = 0; i < n; i++)
		cnt[stripe_of(kv, hash_of(kv, keys[i]))]++;
	int rc = 0;
	for (size_t k = 0; k < kv->nstripes && !rc; k++)
		rc = reserve(kv, &st[k], cnt[k]);
	for (size_t i = 0; i < n && !rc; i++) {
		uint64_t h = hash_of(kv, keys[i]);
		kv_stripe *s = &st[stripe_of(kv, h)];
		kv_slot *e = slot_of(s, keys[i], h);
		if (e->row) {
			rc = dml__fail(DML_EFORMAT, "key %llu twice",
			               (unsigned long long)keys[i]);
			break;
		}
		e->key = keys[i];
		e->row = s->n + 1;
		s->keys[s->n] = keys[i];
		memcpy(s->rows + s->n * kv->rl, rows + i * kv->rl, kv->rl * sizeof(float));
		s->n++;
	}
	free(cnt);
	return rc;
}

static void stripes_free(kv_stripe *st, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		free(st[k].tab);
		free(st[k].rows);
		free(st[k].keys);
	}
	free(st);
}

static int kv_load(dml_ps *ps, const char *path)
{
	dml__kv *kv = ps->kv;
	struct stat sb;
	if (stat(path, &sb) != 0)
		return dml__fail(DML_EIO, "%s: %s", path, strerror(errno));
	uint8_t meta[KV_META_LEN];
	uint32_t kind, mlen;
	dml__ckpt_reader *r;
	errno = 0;
	int rc = dml__ckpt_open_with(&r, path, &kind, meta, sizeof meta, &mlen,
	                             &ps->ckpt);
	if (rc)
		return dml__ps_ckpt_failed(path, rc);
	if (kind != KV_KIND || mlen != KV_META_LEN) {
		dml__ckpt_abort(r);
		return dml__fail(DML_EFORMAT, "%s: not a keyed-store checkpoint", path);
	}
	uint64_t width = dml__get_u64(meta), n = dml__get_u64(meta + 8);
	const uint8_t *dm = meta + KV_META;
	uint64_t steps = dml__get_u64(dm + 8), updates = dml__get_u64(dm + 16);
	uint32_t okind = dml__get_u32(dm + 24);
	uint64_t limit = (uint64_t)sb.st_size * INFLATE_MAX;
	if (width != ps->width) {
		rc = dml__fail(DML_EDIM, "%s: rows of %llu, the store's are %zu", path,
		               (unsigned long long)width, ps->width);
	} else if (okind != (uint32_t)ps->optim.kind) {
		rc = dml__fail(DML_ETYPE, "%s: optimizer rule %u, the store's is %d",
		               path, (unsigned)okind, (int)ps->optim.kind);
	} else if (n > limit / 8 || n > limit / sizeof(float) / kv->rl ||
	           (kv->max_rows && n > kv->max_rows)) {
		rc = dml__fail(DML_EFORMAT, "%s: %llu rows: more than the file can "
		               "hold or max_rows allows", path, (unsigned long long)n);
	}
	if (rc) {
		dml__ckpt_abort(r);
		return rc;
	}
	uint64_t *keys = malloc((size_t)(n ? n : 1) * sizeof *keys);
	float *rows = malloc((size_t)(n ? n : 1) * kv->rl * sizeof *rows);
	kv_stripe *st = calloc(kv->nstripes, sizeof *st);
	uint8_t *dd = NULL;
	size_t ddlen = 0;
	if (!keys || !rows || !st)
		rc = DML_ENOMEM;
	if (!rc)
		rc = dml__ckpt_read(r, TAG_KEYS, keys, n * sizeof *keys);
	if (!rc)
		rc = dml__ckpt_read(r, TAG_ROWS, rows, n * kv->rl * sizeof *rows);
	if (!rc)
		rc = dml__ps_read_dedup(r, &dd, &ddlen);
	if (rc)
		dml__ckpt_abort(r);
	else
		rc = dml__ckpt_close(r); /* the CRC, before anything changes */
	if (!rc) {
		size_t at;
		if (!dml__all_finite(rows, (size_t)n * kv->rl, &at))
			rc = dml__fail(DML_EFORMAT, "%s: a non-finite value", path);
	}
	if (!rc)
		rc = build(kv, keys, rows, (size_t)n, st);
	free(keys);
	free(rows);
	if (rc) {
		if (st)
			stripes_free(st, kv->nstripes);
		free(dd);
		return dml__ps_ckpt_failed(path, rc);
	}
	stripes_held all;
	memset(&all, 0xff, sizeof all);
	lock_marked(kv, &all);
	for (size_t k = 0; k < kv->nstripes; k++) {
		kv_stripe *s = &kv->st[k], *t = &st[k];
		kv_stripe old = *s;
		s->tab = t->tab;
		s->cap = t->cap;
		s->n = t->n;
		s->rows = t->rows;
		s->keys = t->keys;
		s->rows_cap = t->rows_cap;
		t->tab = old.tab;
		t->rows = old.rows;
		t->keys = old.keys;
	}
	atomic_store(&kv->nrows, n);
	atomic_store(&ps->steps, steps);
	atomic_store(&ps->updates, updates);
	if (dd)
		dml__ps_dedup_import(ps, dd, ddlen); /* checked: cannot fail */
	unlock_marked(kv, &all);
	stripes_free(st, kv->nstripes);
	free(dd);
	return 0;
}

const dml__ps_ops dml__ps_keyed_ops = {
	.name = "a keyed store",
	.pull_rows = kv_pull_rows,
	.apply_rows = kv_apply_rows,
	.updates = dml__ps_local_updates,
	.rows = kv_rows,
	.advance = dml__ps_local_advance,
	.clock_get = dml__ps_local_clock_get,
	.save = kv_save,
	.load = kv_load,
	.free = kv_free,
};

static uint64_t table_seed(void)
{
	uint64_t s = 0;
	if (dml__sys_random(&s, sizeof s) != 0) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		s = mix((uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 32 ^
		        (uint64_t)(uintptr_t)&ts);
	}
	return s;
}

int dml_ps_new_keyed_abi(dml_ps **out, size_t width, const dml_ps_opts *opts,
                         int abi)
{
	dml__detail_clear();
	dml_ps_opts o;
	int rc = dml__abi_in(&o, sizeof o, opts, DML__L_PS_OPTS, abi);
	if (rc)
		return rc;
	if (!out)
		return DML_EINVAL;
	if (!width || width > DML_PS_MAX_WIDTH)
		return dml__fail(DML_EINVAL, "width %zu: 1 to 2^20", width);
	if (o.init)
		return dml__fail(DML_EINVAL, "init: a dense store's option (keyed "
		                 "stores take row_init)");
	if ((unsigned)o.row_init > DML_PS_INIT_NORMAL)
		return dml__fail(DML_EINVAL, "row_init %d unknown", (int)o.row_init);
	if (!(o.init_scale >= 0) || !isfinite(o.init_scale))
		return dml__fail(DML_EINVAL, "init_scale: finite, >= 0");
	if ((rc = dml__ps_opts_check(&o)))
		return rc;
	dml_ps *ps;
	if ((rc = dml__ps_local_new(&ps, &o, &dml__ps_keyed_ops)))
		return rc;
	ps->width = width;
	dml__kv *kv = calloc(1, sizeof *kv);
	size_t ns = o.stripes ? o.stripes : DML_PS_DEFAULT_KEYED_STRIPES;
	if (ns > MAX_STRIPES)
		ns = MAX_STRIPES;
	if (kv)
		kv->st = calloc(ns, sizeof *kv->st);
	if (!kv || !kv->st) {
		free(kv);
		dml__ps_local_free(ps);
		return DML_ENOMEM;
	}
	kv->nstripes = ns;
	kv->rl = width * (size_t)(1 + dml__optim_nstate(&ps->optim));
	kv->seed = table_seed();
	kv->max_rows = o.max_rows;
	atomic_init(&kv->nrows, 0);
	kv->init = o.row_init;
	kv->scale = o.init_scale != 0 ? o.init_scale : DML_PS_DEFAULT_INIT_SCALE;
	kv->init_seed = o.init_seed;
	for (size_t k = 0; k < ns; k++)
		pthread_mutex_init(&kv->st[k].mu, NULL);
	ps->kv = kv;
	*out = ps;
	return 0;
}
