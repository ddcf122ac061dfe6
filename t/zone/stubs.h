
/*
 * What the zone's unit test sees of t/zone/stubs.c.
 */

#ifndef _STUBS_H_INCLUDED_
#define _STUBS_H_INCLUDED_


extern ngx_int_t    stub_locked;        /* the mutex is held */
extern ngx_int_t    stub_lock_errors;   /* taken twice, or not held */
extern ngx_uint_t   stub_allocs;        /* slab chunks in use */
extern ngx_uint_t   stub_log_level;     /* of the last message, 0: none */
extern char         stub_log[];         /* its format */
extern ngx_module_t ngx_http_llm_gateway_module;  /* the zones' tag */

void stub_set_time(uint64_t ms);
size_t stub_slab_free(ngx_slab_pool_t *pool);


#endif /* _STUBS_H_INCLUDED_ */
