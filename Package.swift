// swift-tools-version:6.0
//
// bpstream: a bounded, backpressured stream.
//   BPStreamCore  pure Swift core (state machine, condition lock, metrics); Swift API
//   CBPStreamCPU  one C inline the core's spin-wait needs (the CPU's pause hint)
//   CBPStream     the one public C header, bpstream.h (the ABI contract)
//   BPStream      @_cdecl thunks: C in, core calls, status codes out -> libbpstream.so
import PackageDescription
import Foundation  // manifest only: the shipped library does not import Foundation

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path

// Release builds of the core drop exclusivity checks on the hot path; the state
// machine's invariants are upheld by the lock, and debug builds (swift test) keep them.
let coreSwiftSettings: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "bpstream",
    products: [
        // Swift users: `import BPStreamCore`.
        .library(name: "BPStreamCore", targets: ["BPStreamCore"]),
        // Everyone else: libbpstream.so + bpstream.h.
        .library(name: "bpstream", type: .dynamic, targets: ["BPStream"]),
    ],
    targets: [
        // CPU hints Swift cannot spell (the spin-wait `pause`); internal to the core.
        .target(name: "CBPStreamCPU"),
        .target(
            name: "BPStreamCore",
            dependencies: ["CBPStreamCPU"],
            swiftSettings: coreSwiftSettings
        ),
        .target(name: "CBPStream"),
        .target(
            name: "BPStream",
            dependencies: ["BPStreamCore", "CBPStream"],
            exclude: ["exports.map"],
            swiftSettings: coreSwiftSettings,
            linkerSettings: [
                // One self-contained .so: Swift runtime inside, found next to nothing
                // but itself (SwiftPM adds RUNPATH $ORIGIN), exporting only bps_* symbols.
                // lld, not the default gold: gold keeps every protected Swift symbol that
                // another module reaches through the GOT (type metadata, conformances) in
                // .dynsym, as a LOCAL entry with a GLOB_DAT relocation, despite the version
                // script; lld resolves those GOT slots at link time (RELATIVE) and drops them.
                // Release only: these flags also reach the test binary, whose link they break.
                .unsafeFlags([
                    "-use-ld=lld",
                    "-static-stdlib",
                    "-Xlinker", "--version-script=\(packageRoot)/Sources/BPStream/exports.map",
                    "-Xlinker", "--gc-sections",
                ], .when(configuration: .release)),
            ]
        ),
        // examples/swift: `swift run swift-producer-consumer`.
        .executableTarget(
            name: "swift-producer-consumer", dependencies: ["BPStreamCore"], path: "examples/swift"),
        .testTarget(name: "BPStreamCoreTests", dependencies: ["BPStreamCore"]),
        .testTarget(name: "BPStreamABITests", dependencies: ["BPStream", "CBPStream"]),
    ]
)
