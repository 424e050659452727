// CRC-32C (Castagnoli): the checksum that guards every tensor shardgrad
// writes into a safetensors file (tensor/safetensors.h), so that a checkpoint
// damaged on disk or in a copy is refused with an error instead of resuming
// training from garbage. The same CRC as iSCSI, ext4 and SSE4.2's `crc32`
// instruction: reflected polynomial 0x82F63B78, initial value and final XOR
// 0xFFFFFFFF; crc32c("123456789") = 0xE3069283.
//
// Chained: crc32c(b, crc32c(a)) is the CRC of a followed by b, so a file can
// be checked in pieces.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sg {

// On x86-64 with SSE4.2 the instruction (8 bytes a step); elsewhere a table.
uint32_t crc32c(const void* data, size_t bytes, uint32_t previous = 0);

// The table form alone, whatever the CPU (the tests hold both to the same bits).
uint32_t crc32c_portable(const void* data, size_t bytes, uint32_t previous = 0);

// As files record it: 8 lowercase hex digits.
std::string crc32c_hex(uint32_t crc);

}  // namespace sg
