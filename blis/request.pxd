# Typed state for the compiled build of request.py (Cython pure-Python mode; setup.py): the engine's
# compiled modules read and write a request's progress and fast-path bookkeeping as C fields. The
# .py stays the source and, interpreted, the reference path.
cimport cython


cdef class Request:
    cdef public object id, _input_tokens, _output_tokens, _token_source, state, itl, _block_hashes
    cdef public Py_ssize_t input_len, output_len, progress_index, num_new_tokens, computed_tokens
    cdef public Py_ssize_t lazy_from, run_key, exit_step, kv_step
    cdef public object max_output_len, ttft_set, first_token_time, arrival_time
    cdef public object scheduled_step_idx, finished_step_idx, length_capped, priority, tenant_id
    cdef public object slo_class, session_id, round_index, client_id, prefix_group, prefix_length
    cdef public object streaming, model, adapter, text_tokens, image_tokens, audio_tokens
    cdef public object video_tokens, reason_ratio, assigned_instance, deadline, slo_target_us
    cdef public object is_decode_sub_request, enqueue_time, schedule_time, completion_time
    cdef public object think_time_us
