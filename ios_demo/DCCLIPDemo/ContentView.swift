import DCCLIPCore
import PhotosUI
import SwiftUI
import UIKit

/// One screen: pick or shoot a photo, classify it zero-shot against the bundle's labels in English or
/// Chinese, rank a free-text query among them, see the top 5 with scores and latency; check the bundle
/// against golden.json; run the benchmark. The logic is DCCLIPCore's; this is wiring.
struct ContentView: View {
    @StateObject private var model = DemoModel()
    @State private var pick: PhotosPickerItem?
    @State private var showCamera = false

    var body: some View {
        NavigationStack {
            Form {
                Section("Bundle") { Text(model.info).font(.footnote).textSelection(.enabled) }
                Section("Image") {
                    if let image = model.image {
                        Image(uiImage: image).resizable().scaledToFit().frame(maxHeight: 240)
                    }
                    HStack {
                        PhotosPicker("Gallery", selection: $pick, matching: .images)
                        Spacer()
                        Button("Camera") { showCamera = true }
                            .disabled(!UIImagePickerController.isSourceTypeAvailable(.camera))
                    }
                }
                Section("Labels") {
                    Picker("Language", selection: $model.language) {
                        Text("English").tag("en")
                        Text("中文").tag("zh")
                    }
                    .pickerStyle(.segmented)
                    TextField("Free text, English or 中文", text: $model.query)
                        .onSubmit { model.classify() }
                    Button("Classify") { model.classify() }
                }
                Section("Top 5") {
                    ForEach(Array(model.top.enumerated()), id: \.offset) { i, s in
                        HStack {
                            Text("\(i + 1). \(s.label)")
                            Spacer()
                            Text(String(format: "%.2f%%", 100 * s.probability)).monospacedDigit()
                        }
                    }
                    if !model.latency.isEmpty { Text(model.latency).font(.footnote) }
                }
                Section("Checks") {
                    Button("Check against golden.json") { model.selfTest() }
                    Button("Benchmark") { model.benchmark() }
                    if let report = model.reportURL { ShareLink("Share device_report.json", item: report) }
                    if !model.message.isEmpty { Text(model.message).font(.footnote.monospaced()).textSelection(.enabled) }
                }
            }
            .navigationTitle("DC-CLIP demo")
        }
        .onChange(of: pick) { item in
            Task {
                if let data = try? await item?.loadTransferable(type: Data.self), let image = UIImage(data: data) {
                    model.setImage(image)
                }
            }
        }
        .onChange(of: model.language) { _ in model.classify() }
        .sheet(isPresented: $showCamera) { CameraPicker { model.setImage($0) } }
        .task { model.load() }
    }
}

/// State of the screen; published values change on the main queue only (work runs on `worker`).
final class DemoModel: ObservableObject {
    @Published var info = "Loading and verifying the bundle…"
    @Published var image: UIImage?
    @Published var language = "en"
    @Published var query = ""
    @Published var top: [Scoring.Scored] = []
    @Published var latency = ""
    @Published var message = ""
    @Published var reportURL: URL?

    private var bundle: DCCLIPBundle?
    private var classifier: Classifier?
    private var pixels: Pixels?
    private let worker = DispatchQueue(label: "dcclip.worker")

    private func background<T>(_ work: @escaping () throws -> T, _ done: @escaping (T) -> Void) {
        worker.async {
            let result = Result { try work() }
            DispatchQueue.main.async {
                switch result {
                case .success(let v): done(v)
                case .failure(let e): self.message = "Error: \(e.localizedDescription)"
                }
            }
        }
    }

    func load() {
        background({ () -> (DCCLIPBundle, Classifier, String) in
            let dir = try BundleLocator.locate()
            let b = try DCCLIPBundle.open(dir) // refuses an unknown format version or any sha256 mismatch
            let c = try Classifier(bundle: b, encoders: CoreMLEncoders.defaults(b.manifest))
            let m = b.manifest
            let gate = (m.raw["parity_gate"] as? [String: Any])?["passed"] as? Bool == true
            let imageFile = try m.defaultArtifact("image").file, textFile = try m.defaultArtifact("text").file
            let labels = b.classes?.labelsEn.count ?? 0
            let info = "\(dir.lastPathComponent): \(m.target), embed \(m.embedDim), \(labels) labels, "
                + "context \(m.contextLength)\nimage \(imageFile), text \(textFile)\n"
                + "parity gate at export: \(gate ? "passed" : "FAILED (overridden)")"
            return (b, c, info)
        }) { b, c, info in
            self.bundle = b
            self.classifier = c
            self.info = info
        }
    }

    func setImage(_ image: UIImage) {
        self.image = image
        pixels = BundleLocator.pixels(image)
        classify()
    }

    func classify() {
        guard let c = classifier, let px = pixels else { return }
        let lang = language, q = query
        background({ try c.classify(px, language: lang, query: q) }) { a in
            self.top = a.top
            self.latency = String(format: "preprocess %.1f ms, image encoder %.1f ms%@, total %.1f ms", a.preprocessMs,
                                  a.imageMs, a.textMs > 0 ? String(format: ", query %.1f ms", a.textMs) : "", a.totalMs)
        }
    }

    func selfTest() {
        guard let c = classifier else { return }
        message = "Running golden.json through the app…"
        background({
            let p = try c.goldenParity(decode: ImageDecoding.decode)
            let i = Benchmark.parity(p.imageDevice, p.imageReference), t = Benchmark.parity(p.textDevice, p.textReference)
            return String(format: "golden.json vs this device (default artifacts)\nimage: cosine min %.5f mean %.5f\ntext:  cosine min %.5f mean %.5f",
                          i["cosine_min"] as! Double, i["cosine_mean"] as! Double, t["cosine_min"] as! Double, t["cosine_mean"] as! Double)
        }) { self.message = $0 }
    }

    func benchmark() {
        guard let b = bundle else { return }
        message = "Benchmarking every Core ML package in the bundle (5 warm-up + 50 runs each)…"
        background({ () -> (URL, String) in
            let eval = BundleLocator.evalImages()
            let entries = try DeviceBenchmark.run(b, load: { try CoreMLEncoders.forArtifact(b.manifest, $0) },
                                                  decode: ImageDecoding.decode, eval: eval, warmup: 5, runs: 50,
                                                  peakMemory: { BundleLocator.peakMemoryBytes() })
            var sys = utsname()
            uname(&sys)
            let machine = withUnsafeBytes(of: &sys.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let device: [String: Any] = ["platform": "ios", "model": machine, "os": UIDevice.current.systemVersion,
                                         "runtime": "Core ML (compute units: all)", "batch": 1, "warmup": 5, "runs": 50,
                                         "bundle": b.manifest.directory.path, "eval_images": eval.count]
            let url = BundleLocator.documents.appendingPathComponent("device_report.json")
            try Benchmark.report(device: device, entries: entries).write(to: url)
            let lines = entries.map { String(format: "%@ %.2f ms (p90 %.2f)", $0["name"] as! String,
                                             $0["latency_ms_median"] as! Double, $0["latency_ms_p90"] as! Double) }
            return (url, lines.joined(separator: "\n") + "\nwrote \(url.lastPathComponent) (Documents)")
        }) { url, text in
            self.reportURL = url
            self.message = text
        }
    }
}

/// The camera, through UIImagePickerController.
struct CameraPicker: UIViewControllerRepresentable {
    let onImage: (UIImage) -> Void
    @Environment(\.dismiss) private var dismiss

    func makeUIViewController(context: Context) -> UIImagePickerController {
        let picker = UIImagePickerController()
        picker.sourceType = .camera
        picker.delegate = context.coordinator
        return picker
    }

    func updateUIViewController(_ controller: UIImagePickerController, context: Context) {}

    func makeCoordinator() -> Coordinator { Coordinator(self) }

    final class Coordinator: NSObject, UIImagePickerControllerDelegate, UINavigationControllerDelegate {
        let parent: CameraPicker
        init(_ parent: CameraPicker) { self.parent = parent }

        func imagePickerController(_ picker: UIImagePickerController,
                                   didFinishPickingMediaWithInfo info: [UIImagePickerController.InfoKey: Any]) {
            if let image = info[.originalImage] as? UIImage { parent.onImage(image) }
            parent.dismiss()
        }

        func imagePickerControllerDidCancel(_ picker: UIImagePickerController) { parent.dismiss() }
    }
}
