import StewardFormats
import Vapor

/// `steward settings list|get|set|unset`: the same service as the API, acting as the system. A change reaches a
/// running server within its poll (2 s), or at once on PostgreSQL.
struct SettingsCommandGroup: AsyncCommandGroup {
    var help: String { "Read and change runtime settings." }
    var commands: [String: any AnyAsyncCommand] {
        ["list": SettingsListCommand(), "get": SettingsGetCommand(), "set": SettingsSetCommand(), "unset": SettingsUnsetCommand()]
    }
}

private func describe(_ setting: SettingResponse) -> String {
    "\(setting.key) = \((try? setting.value.canonicalString()) ?? "null")  (\(setting.source))"
}

struct SettingsListCommand: AsyncCommand {
    struct Signature: CommandSignature { init() {} }

    var help: String { "List every setting with its value and source." }

    func run(using context: CommandContext, signature: Signature) async throws {
        let app = context.application
        await app.runtimeSettings.load(app)
        for setting in try await SettingsService(app: app).all() { context.console.print(describe(setting)) }
    }
}

struct SettingsGetCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Argument(name: "key", help: "The setting, such as features.webhooks.") var key: String
        init() {}
    }

    var help: String { "Show one setting, its default and what it does." }

    func run(using context: CommandContext, signature: Signature) async throws {
        let app = context.application
        await app.runtimeSettings.load(app)
        do {
            let setting = try await SettingsService(app: app).find(signature.key)
            context.console.print(describe(setting))
            context.console.print("default: \((try? setting.defaultValue.canonicalString()) ?? "null")\(setting.environmentVariable.map { " (\($0))" } ?? "")")
            context.console.print(setting.description)
        } catch {
            throw commandFailure(error)
        }
    }
}

struct SettingsSetCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Argument(name: "key", help: "The setting, such as features.webhooks.") var key: String
        @Argument(name: "value", help: "A JSON value (true, 20, \"600/min\", null); text that is not JSON is taken as a string.") var value: String
        init() {}
    }

    var help: String { "Set a setting." }

    func run(using context: CommandContext, signature: Signature) async throws {
        let app = context.application
        await app.runtimeSettings.load(app)
        let value = JSONValue.parse(signature.value)
        do {
            let setting = try await SettingsService(app: app).set(signature.key, to: value, actor: .cli, field: signature.key)
            context.console.print(describe(setting))
        } catch {
            throw commandFailure(error)
        }
    }
}

struct SettingsUnsetCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Argument(name: "key", help: "The setting to return to its default.") var key: String
        init() {}
    }

    var help: String { "Return a setting to its default." }

    func run(using context: CommandContext, signature: Signature) async throws {
        let app = context.application
        await app.runtimeSettings.load(app)
        do {
            let setting = try await SettingsService(app: app).unset(signature.key, actor: .cli)
            context.console.print(describe(setting))
        } catch {
            throw commandFailure(error)
        }
    }
}
