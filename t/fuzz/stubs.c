
/*
 * The few nginx functions the JSON scanner and the SSE parser call, for
 * the fuzz target only (Debian's nginx-dev ships headers, not sources):
 * pool memory is plain malloc, freed after each input.
 */

#include <ngx_config.h>
#include <ngx_core.h>


#define FUZZ_MAX_ALLOCS  65536


static void        *allocs[FUZZ_MAX_ALLOCS];
static ngx_uint_t   nallocs;


void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    void  *p;

    if (nallocs == FUZZ_MAX_ALLOCS) {
        return NULL;
    }

    p = malloc(size ? size : 1);

    if (p) {
        allocs[nallocs++] = p;
    }

    return p;
}


void
fuzz_free_all(void)
{
    while (nallocs) {
        free(allocs[--nallocs]);
    }
}


ngx_int_t
ngx_atoi(u_char *line, size_t n)
{
    ngx_int_t  value, cutoff, cutlim;

    if (n == 0) {
        return NGX_ERROR;
    }

    cutoff = NGX_MAX_INT_T_VALUE / 10;
    cutlim = NGX_MAX_INT_T_VALUE % 10;

    for (value = 0; n--; line++) {
        if (*line < '0' || *line > '9') {
            return NGX_ERROR;
        }

        if (value >= cutoff && (value > cutoff || *line - '0' > cutlim)) {
            return NGX_ERROR;
        }

        value = value * 10 + (*line - '0');
    }

    return value;
}
