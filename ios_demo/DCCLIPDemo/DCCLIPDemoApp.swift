import SwiftUI

@main
struct DCCLIPDemoApp: App {
    var body: some Scene {
        WindowGroup { ContentView() }
    }
}
