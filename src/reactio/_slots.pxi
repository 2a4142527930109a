# Slots: a ReactorID is an index into rt.slots plus that slot's generation, bumped each time
# the slot is freed, so an id is never reused and a stale one is refused.

cdef inline object _lookup(ReactRuntime rt, ReactorID rid):
    if rid.slot < rt.nslots and rt.gens[rid.slot] == rid.generation:
        return rt.slots[rid.slot]
    return None


cdef ReactorID _alloc_slot(ReactRuntime rt, object obj):
    cdef uint32_t slot
    cdef Py_ssize_t newcap
    cdef void *p
    if rt.nfree > 0:
        rt.nfree -= 1
        slot = rt.free_slots[rt.nfree]
        rt.slots[slot] = obj
    else:
        if rt.nslots == rt.slots_cap:
            newcap = max(64, 2 * rt.slots_cap)
            p = realloc(rt.gens, newcap * sizeof(uint32_t))
            if p == NULL:
                raise MemoryError()
            rt.gens = <uint32_t *>p
            p = realloc(rt.free_slots, newcap * sizeof(uint32_t))
            if p == NULL:
                raise MemoryError()
            rt.free_slots = <uint32_t *>p
            rt.slots_cap = newcap
        slot = <uint32_t>rt.nslots
        rt.gens[slot] = 1
        rt.nslots += 1
        rt.slots.append(obj)
    return ReactorID(slot, rt.gens[slot])


cdef int _free_slot(ReactRuntime rt, uint32_t slot) except -1:
    rt.slots[slot] = None
    rt.gens[slot] += 1
    if rt.gens[slot] == 0:
        rt.gens[slot] = 1
    rt.free_slots[rt.nfree] = slot
    rt.nfree += 1
    return 0
