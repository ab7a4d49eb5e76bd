import DCCLIPCore
import Foundation
import UIKit

/// Where the app finds its bundle (the directory `python -m lowering.export --target ios` wrote):
///  1. Documents/bundle: copied in with Finder (file sharing is on) or Xcode's device window; no rebuild;
///  2. the app's resources: a folder reference named "bundle" added to the target.
/// Either way DCCLIPBundle.open verifies every file against the manifest's sha256 table.
enum BundleLocator {
    static var documents: URL { FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0] }

    static func locate() throws -> URL {
        let pushed = documents.appendingPathComponent("bundle")
        if FileManager.default.fileExists(atPath: pushed.appendingPathComponent("manifest.json").path) { return pushed }
        if let built = Bundle.main.url(forResource: "bundle", withExtension: nil),
           FileManager.default.fileExists(atPath: built.appendingPathComponent("manifest.json").path) {
            return built
        }
        throw BundleError("no bundle: copy one to the app's Documents/bundle (Finder > the device > Files) or add "
            + "it to the target as a folder reference named \"bundle\" (see ios_demo/README.md)")
    }

    /// Labeled images for the benchmark's accuracy: Documents/eval/<class index>_<anything>.png|jpg.
    static func evalImages() -> [DeviceBenchmark.Labeled] {
        let dir = documents.appendingPathComponent("eval")
        let files = (try? FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)) ?? []
        return files.sorted { $0.lastPathComponent < $1.lastPathComponent }.compactMap { url in
            let name = url.lastPathComponent
            guard ["png", "jpg", "jpeg"].contains(url.pathExtension.lowercased()),
                  let prefix = name.split(separator: "_").first, let label = Int(prefix) else { return nil }
            return DeviceBenchmark.Labeled(url: url, label: label)
        }
    }

    /// A UIImage's pixels, upright: its orientation as the EXIF value, applied as a pixel permutation.
    static func pixels(_ image: UIImage) -> Pixels? {
        guard let cg = image.cgImage else { return nil }
        let exif: [UIImage.Orientation: Int] = [.up: 1, .upMirrored: 2, .down: 3, .downMirrored: 4,
                                                 .leftMirrored: 5, .right: 6, .rightMirrored: 7, .left: 8]
        return ImageDecoding.orient(ImageDecoding.pixels(cg), exif[image.imageOrientation] ?? 1)
    }

    /// The process's peak resident memory in bytes (ru_maxrss is in bytes on Darwin).
    static func peakMemoryBytes() -> Int? {
        var usage = rusage()
        return getrusage(RUSAGE_SELF, &usage) == 0 ? Int(usage.ru_maxrss) : nil
    }
}
