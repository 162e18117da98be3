// CBPStream is the one public C header, include/bpstream.h; SwiftPM needs a source
// file in every C target. The functions it declares are defined by the @_cdecl
// thunks in Sources/BPStream.
#include "bpstream.h"
