// swift-tools-version:5.9
// The iOS demo's non-UI logic: tokenizer, preprocessing, manifest, scoring, benchmark JSON. Foundation only
// (CryptoKit for sha256, ImageIO/CoreGraphics for decoding in the tests), so it runs in the app and in
// `swift test` on macOS. It mirrors android_demo/core (Java) and is tested against the same vectors.
import PackageDescription

let package = Package(
    name: "DCCLIPCore",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [.library(name: "DCCLIPCore", targets: ["DCCLIPCore"])],
    targets: [
        .target(name: "DCCLIPCore"),
        .testTarget(name: "DCCLIPCoreTests", dependencies: ["DCCLIPCore"]),
    ]
)
